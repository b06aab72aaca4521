"""Stacking: diverse base learners, out-of-fold predictions, a logistic-regression meta-learner.

Every base learner is fitted k times on k-1 folds of the TRAINING split and predicts the fold it
did not see; those out-of-fold (OOF) probabilities, concatenated over learners, are the
meta-learner's features on the training rows. Each learner is then refitted on the whole train
split to make the features of valid and test. The meta-learner (scikit-learn's
`LogisticRegression`) is fitted on the OOF features of train only: never on valid or test, and
it never sees a prediction that a base learner made for a row it was fitted on.

    data = split_arrays(task)                       # {"train"|"valid"|"test": (x, y)}
    learners = [NetworkLearner("mlp_adam", task, trainer, tx_args),
                SklearnLearner("logistic", lambda: LogisticRegression(max_iter=500))]
    result = stack(learners, data, num_folds=5, seed=0)
    result.probs["test"]                           # (N_test, C) the stacked prediction

Networks are fitted on all k folds and the full split in ONE vmapped trainer call (k + 1
members, each with its own rows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from experiments.modeldev import members as members_lib

EVAL_SPLITS = ("valid", "test")


class Fold(NamedTuple):
    """fit: training rows a learner is fitted on; held: the rows it then predicts."""

    fit: np.ndarray
    held: np.ndarray


def split_arrays(task) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (x, y)} of a task's full splits as NumPy arrays."""
    return {split: tuple(np.asarray(task.full_split(split)[k]) for k in ("x", "y"))
            for split in ("train", *EVAL_SPLITS)}


def kfold(num_rows: int, num_folds: int, seed: int = 0) -> list[Fold]:
    """scikit-learn's shuffled KFold of the training rows."""
    from sklearn.model_selection import KFold

    if num_folds < 2 or num_folds > num_rows:
        raise ValueError(f"num_folds must be in [2, {num_rows}]; got {num_folds}")
    splitter = KFold(n_splits=num_folds, shuffle=True, random_state=seed)
    return [Fold(fit, held) for fit, held in splitter.split(np.arange(num_rows))]


def check_folds(folds, num_rows: int) -> None:
    """Held-out parts partition the rows, and no fold's fit rows include its held-out rows."""
    held = np.concatenate([fold.held for fold in folds])
    if len(held) != num_rows or len(np.unique(held)) != num_rows:
        raise ValueError(f"the folds' held-out rows must partition all {num_rows} train rows")
    for index, fold in enumerate(folds):
        if np.intersect1d(fold.fit, fold.held).size:
            raise ValueError(f"fold {index} is fitted on rows it predicts: out-of-fold "
                             "predictions would leak")


def _flat(x) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(len(x), -1)


class SklearnLearner(NamedTuple):
    """A scikit-learn classifier on flattened inputs; `make_model()` returns a fresh one."""

    name: str
    make_model: Callable[[], Any]

    def predict_folds(self, data, folds, num_classes: int):
        """(OOF probs on train (N, C), {split: probs of the model refitted on all train})."""
        x, y = data["train"]
        oof = np.full((len(y), num_classes), np.nan)
        for fold in folds:
            model = self.make_model().fit(_flat(x[fold.fit]), y[fold.fit])
            oof[fold.held] = _probs(model, _flat(x[fold.held]), num_classes)
        model = self.make_model().fit(_flat(x), y)
        return oof, {s: _probs(model, _flat(data[s][0]), num_classes) for s in EVAL_SPLITS}


def _probs(model, x, num_classes: int) -> np.ndarray:
    full = np.zeros((len(x), num_classes))
    full[:, np.asarray(model.classes_, int)] = model.predict_proba(x)
    return full


class NetworkLearner(NamedTuple):
    """A network of `task` trained by `trainer(tx_args, ...)` (`members.make_member_trainer`)."""

    name: str
    task: Any
    trainer: Callable
    tx_args: Any
    seed: int = 0

    def predict_folds(self, data, folds, num_classes: int):
        """All k fold fits and the full fit as k + 1 members of one vmapped trainer call."""
        num_rows = len(data["train"][1])
        fits = [fold.fit for fold in folds] + [np.arange(num_rows)]
        indices = np.zeros((len(fits), num_rows), np.int32)
        for member, rows in enumerate(fits):
            indices[member, :len(rows)] = rows
        num_used = np.asarray([len(rows) for rows in fits], np.int32)
        keys = members_lib.member_keys(self.seed, len(fits))
        params = self.trainer(self.tx_args, keys, jnp.asarray(indices), None,
                              jnp.asarray(num_used))
        train_probs = members_lib.member_outputs(self.task, params, "train")
        oof = np.full((num_rows, num_classes), np.nan)
        for member, fold in enumerate(folds):
            oof[fold.held] = train_probs[member, fold.held]
        full = members_lib.take_members(params, [len(folds)])
        return oof, {s: members_lib.member_outputs(self.task, full, s)[0] for s in EVAL_SPLITS}


class MetaLearner:
    """Logistic regression over the base learners' concatenated probabilities.

    It records the split (always "train") whose out-of-fold features it was fitted on and
    refuses to predict that split: its rows are the meta-learner's own training rows.
    """

    def __init__(self, features, labels, *, fitted_on: str = "train", seed: int = 0,
                 max_iter: int = 1000):
        from sklearn.linear_model import LogisticRegression

        if fitted_on != "train":
            raise ValueError(f"the meta-learner is fitted on the train split's out-of-fold "
                             f"predictions only; got fitted_on={fitted_on!r} (valid and test "
                             "are for scoring)")
        features = np.asarray(features, np.float64)
        if not np.all(np.isfinite(features)):
            raise ValueError("meta-learner features contain NaN: some train row has no "
                             "out-of-fold prediction")
        self.fitted_on = fitted_on
        self.model = LogisticRegression(max_iter=max_iter, random_state=seed)
        self.model.fit(features, np.asarray(labels))
        self.num_classes = int(np.max(labels)) + 1

    def predict_proba(self, features, split: str) -> np.ndarray:
        """Probabilities for the rows of `split` ("valid" or "test")."""
        if split == self.fitted_on:
            raise ValueError(f"the meta-learner was fitted on the {split!r} split; it cannot "
                             f"score the rows it was fitted on (use one of {EVAL_SPLITS})")
        if split not in EVAL_SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {EVAL_SPLITS}")
        return _probs(self.model, np.asarray(features, np.float64), self.num_classes)


class StackingResult(NamedTuple):
    """oof: {learner: (N_train, C)}; base_probs: {learner: {split: probs}}; probs: {split:
    the meta-learner's probs}; meta: the fitted MetaLearner; folds: the folds used."""

    oof: dict[str, np.ndarray]
    base_probs: dict[str, dict[str, np.ndarray]]
    probs: dict[str, np.ndarray]
    meta: MetaLearner
    folds: list[Fold]


def stack(learners, data: Mapping[str, tuple], *, num_folds: int = 5, seed: int = 0
          ) -> StackingResult:
    """Out-of-fold predictions of every learner, a meta-learner on them, valid/test scores."""
    names = [learner.name for learner in learners]
    if len(learners) < 2:
        raise ValueError(f"stacking needs at least 2 base learners; got {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"base learner names must be unique; got {names}")
    labels = np.asarray(data["train"][1])
    num_classes = int(max(np.max(data[s][1]) for s in data)) + 1
    folds = kfold(len(labels), num_folds, seed)
    check_folds(folds, len(labels))
    oof, base_probs = {}, {}
    for learner in learners:
        oof[learner.name], base_probs[learner.name] = learner.predict_folds(
            data, folds, num_classes)
        if oof[learner.name].shape != (len(labels), num_classes):
            raise ValueError(f"learner {learner.name!r} returned out-of-fold outputs of shape "
                             f"{oof[learner.name].shape}; expected {(len(labels), num_classes)}")
    meta = MetaLearner(np.concatenate([oof[n] for n in names], axis=1), labels, seed=seed)
    probs = {s: meta.predict_proba(np.concatenate([base_probs[n][s] for n in names], axis=1), s)
             for s in EVAL_SPLITS}
    return StackingResult(oof, base_probs, probs, meta, folds)
