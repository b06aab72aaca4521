"""Boosting: AdaBoost (SAMME) over small networks, and scikit-learn's histogram gradient boosting.

SAMME (Zhu et al., 2009; scikit-learn's `AdaBoostClassifier(algorithm="SAMME")`), K classes,
sample weights w (summing to 1):
    err_m   = sum_i w_i [h_m(x_i) != y_i]
    alpha_m = log((1 - err_m) / err_m) + log(K - 1)
    w_i    <- w_i * exp(alpha_m [h_m(x_i) != y_i]),  renormalised
    H(x)    = argmax_k sum_m alpha_m [h_m(x) = k]
Members are networks trained by weighted resampling: each training batch is drawn from the
train split with probabilities w (`members.ResampledTask(weights=...)`). Rounds are sequential
by nature; every round reuses one compiled trainer.

    weights, alpha, err = samme_update(weights, correct, num_classes=10)
    fit = adaboost_samme(task, trainer, tx_args, num_members=5)
    samme_predict(member_preds_MN, fit.alphas, num_classes=10)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.modeldev import members as members_lib
from experiments.modeldev.combine import check_member_preds

_EPS = 1e-10


def samme_update(weights, correct, num_classes: int) -> tuple[np.ndarray, float, float]:
    """One SAMME round: (new normalised weights, alpha, weighted error) from this member's
    per-row correctness on the training rows. A member no better than chance (err >= 1 - 1/K)
    gets alpha <= 0 and leaves the weights unchanged (the caller stops boosting)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2; got {num_classes}")
    weights = np.asarray(weights, np.float64)
    correct = np.asarray(correct, bool)
    if weights.shape != correct.shape or weights.ndim != 1:
        raise ValueError(f"weights {weights.shape} and correct {correct.shape} must be equal 1-D")
    if np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    weights = weights / weights.sum()
    miss = ~correct
    err = float(np.clip(weights[miss].sum(), _EPS, 1 - _EPS))
    alpha = math.log((1 - err) / err) + math.log(num_classes - 1)
    if alpha <= 0:
        return weights, alpha, err
    new = weights * np.exp(alpha * miss)
    return new / new.sum(), alpha, err


def samme_scores(preds_MN, alphas, num_classes: int) -> np.ndarray:
    """(N, C) sum of the alphas of the members voting for each class."""
    preds_MN = check_member_preds(preds_MN, name="preds_MN", min_members=1)
    alphas = np.asarray(alphas, np.float64)
    if alphas.shape != (preds_MN.shape[0],):
        raise ValueError(f"alphas must have one value per member ({preds_MN.shape[0]}); got "
                         f"{alphas.shape}")
    scores = np.zeros((preds_MN.shape[1], num_classes))
    for member, alpha in zip(preds_MN, alphas, strict=True):
        scores[np.arange(len(member)), member] += alpha
    return scores


def samme_predict(preds_MN, alphas, num_classes: int) -> np.ndarray:
    """(N,) the SAMME decision: the class with the largest alpha-weighted vote."""
    return samme_scores(preds_MN, alphas, num_classes).argmax(axis=1)


def samme_probs(preds_MN, alphas, num_classes: int) -> np.ndarray:
    """(N, C) the normalised alpha-weighted votes (a probability-like score for calibration)."""
    scores = samme_scores(preds_MN, alphas, num_classes)
    total = scores.sum(axis=1, keepdims=True)
    return np.where(total > 0, scores / np.maximum(total, _EPS), 1.0 / num_classes)


class BoostedMembers(NamedTuple):
    """params: stacked parameters of the kept members; alphas, errors: per kept member;
    weights: (rounds + 1, N) the sample weights before each round and after the last;
    stopped_early: a member was no better than chance (it is not kept)."""

    params: Any
    alphas: list[float]
    errors: list[float]
    weights: np.ndarray
    stopped_early: bool


def adaboost_samme(task, trainer, tx_args, *, num_members: int, seed: int = 0
                   ) -> BoostedMembers:
    """AdaBoost-SAMME with network members trained by weighted resampling.

    `trainer` is `members.make_member_trainer(task, ...)`; it is called with ONE member per
    round (compiled once). Weights and member errors are computed on the train split only.
    """
    if num_members < 2:
        raise ValueError(f"num_members must be >= 2 for an ensemble; got {num_members}")
    train = task.full_split("train")
    labels = np.asarray(train["y"])
    num_classes = int(task.data.num_classes) if hasattr(task, "data") else int(labels.max()) + 1
    num_rows = len(labels)
    rows = jnp.arange(num_rows)[None]
    weights = np.full(num_rows, 1.0 / num_rows)
    history, kept, alphas, errors = [weights], [], [], []
    stopped = False
    for round_index in range(num_members):
        keys = members_lib.member_keys(seed + round_index, 1)
        params = trainer(tx_args, keys, rows, weights[None].astype(np.float32))
        preds = members_lib.member_outputs(task, params, "train")[0].argmax(axis=-1)
        weights, alpha, err = samme_update(weights, preds == labels, num_classes)
        if alpha <= 0:
            stopped = True
            break
        kept.append(params)
        alphas.append(alpha)
        errors.append(err)
        history.append(weights)
    if not kept:
        raise ValueError("the first boosting member is no better than chance; nothing to boost")
    stacked = jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *kept)
    return BoostedMembers(stacked, alphas, errors, np.stack(history), stopped)


def hist_gradient_boosting(x_train, y_train, x_eval_list, *, max_iter: int = 100,
                           seed: int = 0) -> list[np.ndarray]:
    """scikit-learn's `HistGradientBoostingClassifier` on flattened raw inputs (the classical
    baseline): fitted on the train rows only; returns class probabilities for each eval set."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    flat = lambda x: np.asarray(x, np.float64).reshape(len(x), -1)
    model = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed,
                                           early_stopping=False)
    model.fit(flat(x_train), np.asarray(y_train))
    return [_full_probs(model, flat(x), int(np.max(y_train)) + 1) for x in x_eval_list]


def _full_probs(model, x, num_classes: int) -> np.ndarray:
    """predict_proba with a column for every class (a class absent from training gets 0)."""
    probs = model.predict_proba(x)
    full = np.zeros((len(x), max(num_classes, int(model.classes_.max()) + 1)))
    full[:, model.classes_.astype(int)] = probs
    return full
