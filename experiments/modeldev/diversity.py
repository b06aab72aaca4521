"""How different ensemble members are, next to what the ensemble gains from them.

    preds_MN = probs_MNC.argmax(-1)
    error_correlation(preds_MN, labels)    # (M, M) Pearson correlation of the 0/1 error vectors
    disagreement(preds_MN)                 # (M, M) fraction of rows two members predict apart
    diversity_summary(probs_MNC, labels, ensemble_probs)   # means + the gain over the best member

The correlation of two members whose errors never vary (one of them always right, or always
wrong) is undefined and reported as NaN (None in JSON), never as 0.
"""

from __future__ import annotations

import math

import numpy as np

from experiments.modeldev.combine import check_member_outputs, check_member_preds


def _check_labels(labels, num_rows: int) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (num_rows,):
        raise ValueError(f"labels must have shape ({num_rows},) like the members' rows; got "
                         f"{labels.shape}")
    return labels


def error_matrix(preds_MN, labels) -> np.ndarray:
    """(M, N) 1.0 where member m is wrong on row n."""
    preds_MN = check_member_preds(preds_MN, name="preds_MN")
    labels = _check_labels(labels, preds_MN.shape[1])
    return (preds_MN != labels[None]).astype(np.float64)


def error_correlation(preds_MN, labels) -> np.ndarray:
    """(M, M) Pearson correlation of members' error indicators; NaN where undefined."""
    errors = error_matrix(preds_MN, labels)
    centred = errors - errors.mean(axis=1, keepdims=True)
    norms = np.sqrt((centred ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (centred @ centred.T) / np.outer(norms, norms)
    corr[np.outer(norms, norms) == 0] = np.nan
    return corr


def disagreement(preds_MN) -> np.ndarray:
    """(M, M) fraction of rows on which members i and j predict different classes."""
    preds_MN = check_member_preds(preds_MN, name="preds_MN")
    return (preds_MN[:, None, :] != preds_MN[None, :, :]).mean(axis=2)


def _off_diagonal_mean(matrix: np.ndarray) -> float:
    mask = ~np.eye(matrix.shape[0], dtype=bool)
    values = matrix[mask]
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def diversity_summary(probs_MNC, labels, ensemble_probs, *, best_member: int | None = None
                      ) -> dict:
    """Mean pairwise error correlation and disagreement, member accuracies, and the ensemble's
    accuracy gain over its best member.

    Args:
      probs_MNC: members' probabilities on the rows scored (e.g. test).
      labels: (N,) true classes of those rows.
      ensemble_probs: (N, C) the combined prediction.
      best_member: the member to compare against, chosen elsewhere (e.g. best on valid); None:
        the best on these rows (an optimistic reference, reported as such).
    """
    probs_MNC = check_member_outputs(probs_MNC, name="probs_MNC")
    preds_MN = probs_MNC.argmax(axis=-1)
    labels = _check_labels(labels, preds_MN.shape[1])
    member_accuracy = (preds_MN == labels[None]).mean(axis=1)
    ensemble_accuracy = float((np.asarray(ensemble_probs).argmax(axis=-1) == labels).mean())
    chosen_on = "these rows (optimistic)" if best_member is None else "given (e.g. valid)"
    best = int(member_accuracy.argmax()) if best_member is None else int(best_member)
    return {
        "num_members": int(preds_MN.shape[0]),
        "mean_error_correlation": _off_diagonal_mean(error_correlation(preds_MN, labels)),
        "mean_disagreement": _off_diagonal_mean(disagreement(preds_MN)),
        "member_accuracy": member_accuracy.tolist(),
        "mean_member_accuracy": float(member_accuracy.mean()),
        "best_member": best,
        "best_member_chosen_on": chosen_on,
        "best_member_accuracy": float(member_accuracy[best]),
        "ensemble_accuracy": ensemble_accuracy,
        "gain_over_best_member": ensemble_accuracy - float(member_accuracy[best]),
    }
