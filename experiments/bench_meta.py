"""Meta-training throughput: inner task-steps per second and where an outer step's time goes.

    python -m experiments.bench_meta --workdir workdirs/bench_meta
    python -m experiments.bench_meta --workdir workdirs/bench_meta_pes \
        --config.estimators=pes --config.setups=regression --config.steps=50

Config: `experiments/configs/bench_meta.py` (the default); measurements:
`experiments.measure.meta`. Writes results.json, report.md and metrics.jsonl.
"""

from __future__ import annotations

from experiments import cli
from experiments.measure import meta


def main(config, workdir) -> list[dict]:
    return meta.run(config, workdir)


if __name__ == "__main__":
    cli.run(main, config_help="meta-training throughput benchmark config",
            default_config_file="bench_meta.py", default_workdir="workdirs/bench_meta")
