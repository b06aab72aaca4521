"""Learning curves ("good now vs good later"): test loss vs training data and vs step budget
per optimizer and model size, power-law fits with extrapolation, crossings with bootstrap
intervals, Pareto trade-offs of a benchmark run, and per-class precision-recall curves.

    python -m experiments.learning_curves --config experiments/configs/learning_curves.py \
        --workdir DIR [--config.benchmark_results=BENCH_DIR/results.json]

Resumable: every point is cached in DIR/points/ (and its tuning in DIR/optuna.db); a rerun
skips points whose file exists. Writes results.json, report.md and PNGs into DIR.
"""

from __future__ import annotations

from experiments import cli, tracking
from experiments.measure.outputs import write_outputs
from experiments.modeldev import curve_experiment


def main(config, workdir):
    tracker = tracking.start_run(workdir, config=config, backends=tuple(config.backends))
    results, report_md, figures = curve_experiment.run_learning_curves(config, workdir)
    write_outputs(workdir, results, report_md, tracker=tracker, figures=figures)
    for key, curve in results["data_curves"].items():
        fit = curve.get("fit", {})
        print(f"{key}: test loss {curve['test_loss_mean'][0]:.3f} -> "
              f"{curve['test_loss_mean'][-1]:.3f} over data; exponent "
              f"{fit.get('exponent', float('nan')):.3f}")
    for crossing in results["crossings"]:
        print(f"{crossing['curve']} {crossing['a']} vs {crossing['b']}: crossing "
              f"{crossing['crossing']} [{crossing['low']:.4g}, {crossing['high']:.4g}]")
    print(f"wrote {workdir}/report.md")
    return results


if __name__ == "__main__":
    cli.run(main, config_help="learning-curves config (experiments/configs/learning_curves.py)",
            default_config_file="learning_curves.py")
