"""Stacking: out-of-fold features only (trap test), a train-only meta-learner, networks."""

import jax.numpy as jnp
import numpy as np
import pytest
from modeldev_fakes import adam_trainer, tiny_task

from experiments.modeldev import stacking


class SpyLearner:
    """A 1-nearest-neighbour learner (perfect on the rows it was fitted on) that records, for
    every prediction, whether the predicted row was among its fitted rows."""

    def __init__(self, name):
        self.name = name
        self.leaks = 0
        self.oof_rows = 0

    def make(self):
        from sklearn.neighbors import KNeighborsClassifier

        spy = self
        class Recorder(KNeighborsClassifier):
            def fit(self, x, y):
                self.fitted_rows_ = {tuple(row) for row in x}
                return super().fit(x, y)

            def predict_proba(self, x):
                spy.leaks += sum(tuple(row) in self.fitted_rows_ for row in x)
                spy.oof_rows += len(x)
                return super().predict_proba(x)

        return Recorder(n_neighbors=1)


def _random_label_data(num_train=60, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    make = lambda n: (rng.normal(size=(n, 4)), rng.integers(0, num_classes, n))
    return {"train": make(num_train), "valid": make(20), "test": make(20)}


def test_meta_learner_never_sees_in_fold_predictions():
    data = _random_label_data()
    spy = SpyLearner("spy_1nn")
    learner = stacking.SklearnLearner(spy.name, spy.make)
    other = stacking.SklearnLearner("spy_copy", SpyLearner("spy_copy").make)
    result = stacking.stack([learner, other], data, num_folds=3, seed=0)
    x_train = data["train"][0]
    # the OOF phase predicts each train row exactly once, never from a fit that saw it; the
    # refit predicts only valid and test rows, which it never saw either
    assert spy.leaks == 0
    assert spy.oof_rows == len(x_train) + 40
    # labels are random: in-fold 1-NN would be 100% accurate on train; out-of-fold is chance
    oof_accuracy = (result.oof[spy.name].argmax(1) == data["train"][1]).mean()
    assert oof_accuracy < 0.6
    # an in-fold "stack" (the leak) would fit the meta-learner on perfect features
    for fold in result.folds:
        assert not np.intersect1d(fold.fit, fold.held).size


def test_meta_learner_refuses_its_own_rows_and_valid_test_fitting():
    data = _random_label_data()
    result = stacking.stack([stacking.SklearnLearner("a", SpyLearner("a").make),
                             stacking.SklearnLearner("b", SpyLearner("b").make)], data,
                            num_folds=2)
    features = np.zeros((5, 6))
    with pytest.raises(ValueError, match="fitted on the 'train' split"):
        result.meta.predict_proba(features, "train")
    with pytest.raises(ValueError, match="fitted on the train split's out-of-fold"):
        stacking.MetaLearner(features, [0, 1, 2, 0, 1], fitted_on="valid")
    with pytest.raises(ValueError, match="at least 2 base learners"):
        stacking.stack([stacking.SklearnLearner("a", SpyLearner("a").make)], data)
    leaky = [stacking.Fold(np.arange(10), np.arange(5)),
             stacking.Fold(np.arange(5), np.arange(5, 10))]
    with pytest.raises(ValueError, match="leak"):
        stacking.check_folds(leaky, 10)


def test_network_learner_folds_in_one_call():
    from sklearn.linear_model import LogisticRegression

    task = tiny_task()
    data = stacking.split_arrays(task)
    net = stacking.NetworkLearner("mlp_adam", task, adam_trainer(), jnp.float32(1e-2))
    logistic = stacking.SklearnLearner("logistic", lambda: LogisticRegression(max_iter=200))
    result = stacking.stack([net, logistic], data, num_folds=2, seed=0)
    assert np.isfinite(result.oof["mlp_adam"]).all()
    test_accuracy = (result.probs["test"].argmax(1) == data["test"][1]).mean()
    assert test_accuracy > 0.8
