"""What an optimizer update costs: update time (and full train steps) of every optimizer, x Adam.

    python -m experiments.bench_update --workdir workdirs/bench_update \
        [--config.sizes=1000000,10000000 --config.repeats=10 --config.train_step=False]

Config: `experiments/configs/bench_update.py` (the default); measurements and the report:
`experiments.measure.update` and `.train_step`. Writes results.json and report.md.
"""

from __future__ import annotations

from experiments import cli
from experiments.measure import update


def main(config, workdir) -> dict:
    return update.run(config, workdir)


if __name__ == "__main__":
    cli.run(main, config_help="update benchmark config", default_config_file="bench_update.py",
            default_workdir="workdirs/bench_update")
