"""Ensembles: bagging, seed ensembles, AdaBoost-SAMME, stacking and diversity, for members
trained by tuned Adam, by each shipped learned optimizer, and mixed.

    python -m experiments.ensembles --config experiments/configs/ensembles.py --workdir DIR \
        [--config.optimizers=adam,mlp_digits_mlp] [--config.num_members=5]

Writes results.json, report.md and ensembles.png into DIR (tracked through
`experiments.tracking`; the Optuna study of the tuning is DIR/optuna.db, so a rerun reuses
its trials). The library is `experiments.modeldev`.
"""

from __future__ import annotations

from experiments import cli, tracking
from experiments.measure.outputs import write_outputs
from experiments.modeldev import ensemble_experiment


def main(config, workdir):
    tracker = tracking.start_run(workdir, config=config, backends=tuple(config.backends))
    results, report_md, figures = ensemble_experiment.run_ensembles(config, workdir)
    write_outputs(workdir, results, report_md, tracker=tracker, figures=figures)
    for label, entry in results["ensembles"].items():
        print(f"{label}: test accuracy {entry['average']['test_accuracy']:.4f} "
              f"(best member {entry['diversity']['best_member_accuracy']:.4f}), "
              f"ECE {entry['average']['test_ece']:.4f}")
    print(f"stacked: {results['stacking']['stacked']['test_accuracy']:.4f}; "
          f"SAMME: {results['boosting']['samme_test_accuracy']:.4f}; wrote {workdir}/report.md")
    return results


if __name__ == "__main__":
    cli.run(main, config_help="ensembles config file (experiments/configs/ensembles.py)",
            default_config_file="ensembles.py")
