"""Data, tensor, asynchronous and pipeline parallelism: equivalence, step time, communication.

    python -m experiments.parallelism --config experiments/configs/parallelism.py \
        --workdir workdirs/parallelism_dp --config.mode=dp     # or tp | async | pp

The measurements: `experiments.measure.parallelism` (dp, tp), `.async_sgd`, `.pipeline`.
"""

from __future__ import annotations

from pathlib import Path

import jax

from experiments import cli
from experiments.measure import parallelism


def main(config, workdir):
    if jax.config.jax_platforms in (None, "", "cpu"):
        jax.config.update("jax_num_cpu_devices", config.num_cpu_devices)
    parallelism.run(config, workdir)
    report = Path(workdir) / "report.md"
    if report.exists():
        print(report.read_text())


if __name__ == "__main__":
    cli.run(main, config_help="parallelism experiment config file")
