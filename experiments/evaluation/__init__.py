"""Offline evaluation of classifiers (and character LMs) from saved predictions.

Modules, one concept each:
- `checks`       input validation (ValueError naming the argument and the problem)
- `metrics`      accuracy, precision / recall / F1, ROC-AUC, log loss, confusion matrix,
                 perplexity and bits per character (all from sklearn.metrics)
- `uncertainty`  bootstrap intervals of any metric (scipy.stats.bootstrap); `weighted` holds
                 the vectorised per-resample metrics it uses
- `baselines`    random (uniform / label distribution, closed form), zero rule, sklearn heuristic
- `calibration`  ECE / MCE, reliability diagrams, temperature scaling, selective prediction
- `slices`       per-slice metrics, Simpson's paradox, the high-error slice finder
- `behavioural`  perturbation, invariance and directional checks of a predict_fn
- `predictions`  the RUN/predictions/<name>.npz format, save / load / predict_task
- `report`       evaluate_run: evaluation.json, evaluation.md and PNGs of a run

    from experiments import evaluation
    preds = evaluation.predict_task(task, params)
    evaluation.save_predictions(run_dir, "adam_seed0", preds)
    evaluation.evaluate_run(run_dir)
"""

from experiments.evaluation.predictions import (
    Predictions,
    load_predictions,
    load_run_predictions,
    predict_task,
    save_behaviour,
    save_predictions,
    snapshot_params,
)
from experiments.evaluation.report import EvaluationSettings, evaluate_run

__all__ = ["EvaluationSettings", "Predictions", "evaluate_run", "load_predictions",
           "load_run_predictions", "predict_task", "save_behaviour", "save_predictions",
           "snapshot_params"]
