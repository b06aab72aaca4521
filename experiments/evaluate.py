"""Evaluate a finished run offline from its saved predictions.

    python -m experiments.evaluate --config experiments/configs/evaluate.py --workdir RUN

Reads `RUN/predictions/<name>.npz` (format: `experiments.evaluation.predictions`) and writes
into RUN: `evaluation.json` (every number), `evaluation.md` (tables) and PNGs (reliability
diagrams per model, the accuracy-coverage curve). Metrics, slices and baselines are on test;
the temperature is fitted on valid. A run without predictions is an error and nothing is
written.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from experiments import cli
from experiments.evaluation import report


def settings_from_config(config) -> report.EvaluationSettings:
    """The config's entries as EvaluationSettings; an unknown key is a ValueError."""
    values = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    known = {field.name for field in dataclasses.fields(report.EvaluationSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown evaluate config keys {unknown}; expected some of "
                         f"{sorted(known)}")
    return report.EvaluationSettings(**values)


def main(config, workdir):
    results = report.evaluate_run(Path(workdir), settings_from_config(config))
    for name, model in results["models"].items():
        test = model["splits"]["test"]["intervals"]["accuracy"]
        print(f"{name}: test accuracy {test['value']:.4f} "
              f"[{test['low']:.4f}, {test['high']:.4f}]")
    print(f"wrote {Path(workdir) / 'evaluation.md'}")
    return results


if __name__ == "__main__":
    cli.run(main, config_help="evaluation config file (experiments/configs/evaluate.py)")
