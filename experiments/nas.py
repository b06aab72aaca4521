"""Neural architecture search over the task zoo's datasets, strategies compared at equal budget.

    python -m experiments.nas --config experiments/configs/nas.py --workdir workdirs/nas_mlp \
        [--config.family=cnn --config.estimator=extrapolation --config.num_trials=48]

Per dataset (config.datasets), every strategy (random / regularised evolution / TPE) runs
config.num_trials trials for each of config.search_seeds, scored on `valid` by the estimator
(short low-fidelity training, or a power-law extrapolation of its validation curve); the best
architecture found is then trained on fresh seeds against the zoo's default and compared on
`test` (accuracy with 95% bootstrap intervals, parameters, ms/step). The workdir gets
config.json, env.json, metrics.jsonl, optuna.db (resumable: run again to continue),
results.json, report.md, search_<dataset>.png and final_rows.json.
"""

from __future__ import annotations

from experiments import cli
from experiments.automl import nas_experiment


def main(config, workdir):
    results = nas_experiment.run_nas(config, workdir)
    for dataset, data in results["per_dataset"].items():
        print(f"{dataset}: found {data['found_arch']} ({data['best_strategy']}, score "
              f"{data['found_score']:.4g})", flush=True)
        for row in data["final"]:
            low, high = row["accuracy_ci"]
            print(f"  {row['label']}: test accuracy {row['test_accuracy']:.3f} "
                  f"[{low:.3f}, {high:.3f}], {row['num_params']} params, "
                  f"{row['ms_per_step']:.2f} ms/step", flush=True)
    print(f"report: {workdir}/report.md", flush=True)


if __name__ == "__main__":
    cli.run(main, config_help="architecture search config file (experiments/configs/nas.py)")
