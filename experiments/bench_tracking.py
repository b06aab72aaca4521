"""Logging overhead: a jitted train loop with tracking on (every N steps) vs off.

    python -m experiments.bench_tracking --workdir workdirs/bench_tracking \
        [--config.num_steps=2000 --config.log_every=10 --config.repeats=5 --config.hidden=256]

Config: `experiments/configs/bench_tracking.py` (the default); measurement:
`experiments.measure.tracking_overhead`. Writes results.json.
"""

from __future__ import annotations

from experiments import cli
from experiments.measure import tracking_overhead


def main(config, workdir) -> dict:
    results = tracking_overhead.run(config, workdir)
    print(tracking_overhead.format_summary(results))
    return results


if __name__ == "__main__":
    cli.run(main, config_help="tracking overhead benchmark config",
            default_config_file="bench_tracking.py", default_workdir="workdirs/bench_tracking")
