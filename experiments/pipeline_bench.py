"""Pipeline parallelism measured: bubbles from the schedule tables, compiled memory, step times.

    python -m experiments.pipeline_bench --workdir workdirs/pipeline_bench \
        [--config.memory_microbatches=4,8,16,32 --config.timing_repeats=5 ...]

Config: `experiments/configs/pipeline_bench.py` (the default); measurements:
`experiments.measure.pipeline`.
"""

from __future__ import annotations

from pathlib import Path

import jax

from experiments import cli
from experiments.measure import pipeline


def main(config, workdir):
    if jax.config.jax_platforms in (None, "", "cpu"):
        jax.config.update("jax_num_cpu_devices", config.num_cpu_devices)
    pipeline.run(config, workdir)
    print((Path(workdir) / "report.md").read_text())


if __name__ == "__main__":
    cli.run(main, config_help="pipeline benchmark config", default_config_file="pipeline_bench.py",
            default_workdir="workdirs/pipeline_bench")
