"""Command-line entry of the experiment scripts: `--config` and `--workdir`, defined at run time.

absl flags live in one process-wide registry, so flags defined at import time make two
experiment modules impossible to import together (a test session, a notebook). Every script
therefore defines its flags only when it runs as a script, through `run`:

    def main(config, workdir):
        ...

    if __name__ == "__main__":
        cli.run(main, config_help="meta-training config file")

    $ python -m experiments.NAME --config experiments/configs/FILE.py --workdir DIR \
          [--config.key=value ...]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from absl import app, flags
from ml_collections import config_flags


def run(
    main: Callable[[Any, str], Any],
    *,
    config_help: str,
    default_config: Any = None,
    default_workdir: str | None = None,
    lock_config: bool = False,
) -> None:
    """Define `--config` and `--workdir`, parse the command line, and call `main(config, workdir)`.

    Args:
      main: the script's body; receives the ml_collections config and the workdir path.
      config_help: help text of `--config`.
      default_config: a ConfigDict used when the script embeds its defaults (then `--config`
        takes only `--config.key=value` overrides); None: `--config FILE.py` is required.
      default_workdir: default of `--workdir`; None: `--workdir` is required.
      lock_config: refuse overrides that add keys the config file does not define.
    """
    if default_config is None:
        config_flags.DEFINE_config_file("config", None, config_help, lock_config=lock_config)
        flags.mark_flag_as_required("config")
    else:
        config_flags.DEFINE_config_dict("config", default_config, config_help,
                                        lock_config=lock_config)
    flags.DEFINE_string("workdir", default_workdir, "output directory")
    if default_workdir is None:
        flags.mark_flag_as_required("workdir")

    def _main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
        main(flags.FLAGS.config, flags.FLAGS.workdir)

    app.run(_main)


def names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """A list-valued config entry as a tuple of names, however the command line gave it.

    `--config.lopts=mlp,hyper` arrives as one string (or, when the default is a tuple, as a
    one-element tuple holding 'mlp,hyper'); both and a proper tuple give ('mlp', 'hyper').

        names("a, b,c") == names(("a,b", "c")) == ("a", "b", "c");  names(None) == ()
    """
    if not value:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    return tuple(name.strip() for item in items for name in str(item).split(",") if name.strip())
