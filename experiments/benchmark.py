"""Benchmark learned optimizers against tuned and tuning-free baselines, under two protocols.

    python -m experiments.benchmark --config experiments/configs/benchmark_quick.py \
        --workdir workdirs/benchmark [--config.protocol=optimization --config.num_steps=500 ...]

The config is parsed once (`benchmarking.spec.BenchmarkSpec`: bad names fail before anything
compiles). Tuned optimizers (SGD, Nesterov, Adam, AdamW, Muon, learned optimizers that take a
learning rate) are tuned per task once (`benchmarking.tuning`, Optuna study in
`<workdir>/optuna.db`); the optimization protocol picks winners by the training loss, the
generalization protocol by the validation loss. Adam(1e-3), the tuning-free optax.contrib
optimizers and every learned optimizer at its default form the self-tuning track (0 trials).
Only the final runs read the test split. Outputs and the results.json schema:
`experiments.benchmarking.results`.
"""

from __future__ import annotations

from pathlib import Path

from experiments import cli, tracking
from experiments.benchmarking import report, results, runner
from experiments.benchmarking.spec import BenchmarkSpec


def main(config, workdir):
    spec = BenchmarkSpec.from_config(config)
    tracker = tracking.start_run(workdir, config=config, backends=spec.backends)
    outcome = runner.run_benchmark(spec, workdir, tracker)
    paths = results.write_results(outcome, workdir, tracker)
    tracker.finish()
    print(report.headline_text(outcome))
    print(f"benchmark finished in {outcome['wall_time_s']['total']:.0f} s; "
          f"report: {Path(workdir).resolve() / 'report.md'} ({len(paths)} files)")


if __name__ == "__main__":
    cli.run(main, config_help="benchmark config file", lock_config=True)
