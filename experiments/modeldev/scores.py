"""Scores of one combined prediction: accuracy, log loss, calibration (before / after a
temperature fitted on valid), through `experiments.evaluation`.

    score_probs(valid_labels, valid_probs, test_labels, test_probs)
"""

from __future__ import annotations

import numpy as np

from experiments.evaluation import calibration, metrics


def _renormalise(probs) -> np.ndarray:
    probs = np.clip(np.asarray(probs, np.float64), 1e-12, None)
    return probs / probs.sum(axis=1, keepdims=True)


def score_probs(valid_labels, valid_probs, test_labels, test_probs, *, num_bins: int = 15
                ) -> dict:
    """Test accuracy / log loss / ECE, and ECE + log loss after temperature scaling (T fitted
    on valid only)."""
    valid_probs, test_probs = _renormalise(valid_probs), _renormalise(test_probs)
    scaled = calibration.temperature_scaling(valid_labels, valid_probs, test_labels,
                                             test_probs, num_bins=num_bins)
    return {"test_accuracy": metrics.accuracy(test_labels, test_probs),
            "valid_accuracy": metrics.accuracy(valid_labels, valid_probs),
            "test_log_loss": scaled["before"]["log_loss"],
            "test_ece": scaled["before"]["ece"],
            "temperature": scaled["temperature"],
            "test_log_loss_temperature_scaled": scaled["after"]["log_loss"],
            "test_ece_temperature_scaled": scaled["after"]["ece"]}
