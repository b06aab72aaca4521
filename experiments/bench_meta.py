"""Meta-training throughput: inner task-steps per second and where an outer step's time goes.

    python -m experiments.bench_meta --workdir workdirs/bench_meta
    python -m experiments.bench_meta --workdir workdirs/bench_meta_pes \
        --config.estimators=pes --config.setups=regression --config.steps=50
    python -m experiments.bench_meta --workdir W --config.num_devices=2   # both cores of a CPU

Config: `experiments/configs/bench_meta.py` (the default); measurements:
`experiments.measure.meta`. Writes results.json, report.md and metrics.jsonl.
"""

from __future__ import annotations

import jax

from experiments import cli
from experiments.measure import meta


def main(config, workdir) -> list[dict]:
    if config.num_devices > 1:  # a CPU host split into that many devices, before JAX starts
        jax.config.update("jax_num_cpu_devices", int(config.num_devices))
    return meta.run(config, workdir)


if __name__ == "__main__":
    cli.run(main, config_help="meta-training throughput benchmark config",
            default_config_file="bench_meta.py", default_workdir="workdirs/bench_meta")
