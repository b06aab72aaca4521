"""Benchmark learned optimizers against per-task-tuned SGD, Nesterov, Adam and AdamW.

    python -m experiments.benchmark --config experiments/configs/benchmark_quick.py \
        --workdir workdirs/benchmark [--config.num_steps=500 ...]

Each baseline is tuned per task (`experiments.benchmarking.tuning`, Optuna study in
`<workdir>/optuna.db`), then every optimizer trains on the final seeds; only those final runs
read the test split. Outputs and the results.json schema: `experiments.benchmarking.results`.
"""

from __future__ import annotations

from pathlib import Path

from experiments import cli, tracking
from experiments.benchmarking import report, results, runner


def main(config, workdir):
    tracker = tracking.start_run(workdir, config=config, backends=tuple(config.backends))
    outcome = runner.run_benchmark(config, workdir, tracker)
    paths = results.write_results(outcome, workdir, tracker)
    tracker.finish()
    print(report.headline_text(outcome))
    print(f"benchmark finished in {outcome['wall_time_s']['total']:.0f} s; "
          f"report: {Path(workdir).resolve() / 'report.md'} ({len(paths)} files)")


if __name__ == "__main__":
    cli.run(main, config_help="benchmark config file", lock_config=True)
