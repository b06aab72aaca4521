"""Hyperparameter search on the validation split, with sensitivity and a budget comparison.

    python -m experiments.hpo --config experiments/configs/hpo.py --workdir workdirs/hpo_adam \
        [--config.sampler=tpe --config.num_trials=32 --config.pruner=median]
    python -m experiments.hpo --config experiments/configs/hpo_meta.py --workdir workdirs/hpo_meta
    python -m experiments.hpo --config experiments/configs/hpo.py --workdir workdirs/adam_vs_lopt \
        --config.compare.enabled=True        # tuned Adam with 1..64 trials vs learned optimizers

The workdir gets config.json, env.json, metrics.jsonl (one row per finished trial),
optuna.db (the study: run the command again to resume it, no finished trial re-runs),
results.json, report.md, objective_vs_params.png, importance.png (fANOVA) and, with
compare.enabled, budget_curve.png and final_evals.json. Parallel workers: give every worker
`--config.storage=journal` and the same workdir; each runs its own trials of the one study.
"""

from __future__ import annotations

from experiments import cli
from experiments.automl import hpo_experiment


def main(config, workdir):
    results = hpo_experiment.run_hpo(config, workdir)
    print(f"best {results['best_params']} -> {results['best_value']:.4g} "
          f"({results['num_complete']} complete, {results['num_pruned']} pruned, "
          f"{results['num_failed']} failed); report: {workdir}/report.md", flush=True)


if __name__ == "__main__":
    cli.run(main, config_help="hyperparameter search config file (experiments/configs/hpo*.py)")
