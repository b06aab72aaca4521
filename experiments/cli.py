"""The one command-line entry of every experiment command: `--config` and `--workdir`.

Every command is `python -m experiments.NAME [--config experiments/configs/FILE.py]
--workdir DIR [--config.key=value ...]`, with all its knobs in a `get_config()` file under
`experiments/configs/` (a command may name its default file; overrides of unknown keys fail).

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

import ast
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from absl import app, flags
from ml_collections import config_flags

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def run(
    main: Callable[[Any, Any], Any],
    *,
    config_help: str,
    default_config_file: str | None = None,
    default_workdir: str | None = None,
    workdir: str = "one",
    lock_config: bool = False,
) -> None:
    """Define `--config` and `--workdir`, parse the command line, and call `main(config, workdir)`.

    Args:
      main: the command's body; receives the ml_collections config and the workdir.
      config_help: help text of `--config`.
      default_config_file: a file in `experiments/configs/` (e.g. "bench_meta.py") used when
        `--config` is not given, so `--config.key=value` overrides work on their own; None:
        `--config FILE.py` is required.
      default_workdir: default of `--workdir`; None: `--workdir` is required.
      workdir: "one" (a path), "many" (`--workdir` repeated; `main` gets a list) or "none"
        (no `--workdir` flag; `main` gets None).
      lock_config: refuse overrides that add keys the config file does not define.
    """
    if workdir not in ("one", "many", "none"):
        raise ValueError(f"workdir must be 'one', 'many' or 'none', got {workdir!r}")
    default_path = None
    if default_config_file is not None:
        default_path = CONFIG_DIR / default_config_file
        if not default_path.is_file():
            raise ValueError(f"default config {default_path} does not exist")
    config_flags.DEFINE_config_file(
        "config", None if default_path is None else str(default_path), config_help,
        lock_config=lock_config)
    if default_path is None:
        flags.mark_flag_as_required("config")
    if workdir == "one":
        flags.DEFINE_string("workdir", default_workdir, "output directory")
    elif workdir == "many":
        flags.DEFINE_multi_string("workdir", [], "run folder(s); repeat the flag for several")
    if workdir == "one" and default_workdir is None:
        flags.mark_flag_as_required("workdir")

    def _main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
        main(flags.FLAGS.config, None if workdir == "none" else flags.FLAGS.workdir)

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


def keyword_args(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments from a flag: "hidden_size=4,orthogonalize=False" (values read as
    Python literals, else kept as strings), or a mapping / ConfigDict from a config file.

        keyword_args("hidden_size=4, orthogonalize=False") == {"hidden_size": 4,
                                                                "orthogonalize": False}

    Raises:
      ValueError: an item without "=".
    """
    if not value:
        return {}
    if not isinstance(value, str):
        return dict(value.to_dict() if hasattr(value, "to_dict") else value)
    out = {}
    for item in names(value):
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE items separated by commas, got {item!r} in "
                             f"{value!r}")
        try:
            out[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = text.strip()
    return out
