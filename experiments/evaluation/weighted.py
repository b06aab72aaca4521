"""Classification metrics under example weights, vectorised over a leading resample axis.

A bootstrap resample is a vector of example counts (multinomial weights), so a metric of B
resamples is the metric under B weight vectors: one array operation instead of B sklearn calls.
Each function here equals the sklearn metric called with `sample_weight=weights[b]` (the tests
check this against sklearn), and is used only for bootstrap distributions; point values come
from `experiments.evaluation.metrics`.

    weights_BN = counts_from_indices(index_BN, num_examples)
    accuracy_B = weighted_mean(weights_BN, correct_N)
"""

from __future__ import annotations

import warnings

import numpy as np


def counts_from_indices(index_BN: np.ndarray, num_examples: int) -> np.ndarray:
    """(B, N) resampled example indices -> (B, num_examples) float counts of each example."""
    index_BN = np.atleast_2d(np.asarray(index_BN, dtype=np.int64))
    rows = np.arange(index_BN.shape[0])[:, None]
    offsets = (rows * num_examples + index_BN).ravel()
    counts = np.bincount(offsets, minlength=index_BN.shape[0] * num_examples)
    return counts.reshape(index_BN.shape[0], num_examples).astype(np.float64)


def weighted_mean(weights_BN: np.ndarray, values_N: np.ndarray) -> np.ndarray:
    """(B,) weighted means of per-example values (accuracy, log loss)."""
    return weights_BN @ values_N / weights_BN.sum(axis=1)


def weighted_confusion(weights_BN, labels_N, preds_N, num_classes: int) -> np.ndarray:
    """(B, C, C) weighted confusion matrices [true][predicted]."""
    one_hot_true = np.eye(num_classes)[labels_N]  # (N, C)
    one_hot_pred = np.eye(num_classes)[preds_N]
    return np.einsum("bn,ni,nj->bij", weights_BN, one_hot_true, one_hot_pred)


def macro_precision_recall_f1(confusion_BCC: np.ndarray) -> dict[str, np.ndarray]:
    """(B,) macro precision, recall and F1 over all classes; 0 where undefined (sklearn's
    `zero_division=0`)."""
    true_positive = np.diagonal(confusion_BCC, axis1=1, axis2=2)
    predicted = confusion_BCC.sum(axis=1)
    actual = confusion_BCC.sum(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_positive / predicted, 0.0)
        recall = np.where(actual > 0, true_positive / actual, 0.0)
        denominator = precision + recall
        f1 = np.where(denominator > 0, 2 * precision * recall / denominator, 0.0)
    return {"precision_macro": precision.mean(axis=1), "recall_macro": recall.mean(axis=1),
            "f1_macro": f1.mean(axis=1)}


def _binary_auc(weights_BN, positive_N, scores_N) -> np.ndarray:
    """(B,) weighted ROC-AUC: P(score of a positive > score of a negative) + half the ties."""
    order = np.argsort(scores_N, kind="stable")
    scores, positive = scores_N[order], positive_N[order]
    weights = weights_BN[:, order]
    # Tie groups of equal scores; negatives strictly below a group and inside it.
    starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
    group = np.cumsum(np.r_[True, scores[1:] != scores[:-1]]) - 1
    negative_weights = weights * ~positive
    negatives_in_group = np.add.reduceat(negative_weights, starts, axis=1)  # (B, G)
    negatives_below = np.cumsum(negatives_in_group, axis=1) - negatives_in_group
    credit = negatives_below[:, group] + 0.5 * negatives_in_group[:, group]  # (B, N)
    positive_weights = weights * positive
    total_positive = positive_weights.sum(axis=1)
    total_negative = negative_weights.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (positive_weights * credit).sum(axis=1) / (total_positive * total_negative)
    return np.where((total_positive > 0) & (total_negative > 0), auc, np.nan)


def macro_roc_auc_ovr(weights_BN, labels_N, probs_NC) -> np.ndarray:
    """(B,) mean one-vs-rest ROC-AUC over the classes that have both positives and negatives
    in each resample (NaN if none), as `metrics.roc_auc_ovr` does on the full sample."""
    per_class = np.stack([_binary_auc(weights_BN, labels_N == c, probs_NC[:, c])
                          for c in range(probs_NC.shape[1])], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        return np.nanmean(per_class, axis=1)


def weighted_ece(weights_BN, bin_N, gap_N, num_bins: int) -> np.ndarray:
    """(B,) expected calibration error with fixed bins: sum_b |sum_{i in b} w_i gap_i| / sum w,
    where gap_i = correct_i - confidence_i and bin_N is each example's bin index."""
    one_hot = np.eye(num_bins)[bin_N]  # (N, bins)
    return np.abs((weights_BN * gap_N) @ one_hot).sum(axis=1) / weights_BN.sum(axis=1)
