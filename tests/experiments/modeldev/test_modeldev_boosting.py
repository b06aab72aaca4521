"""AdaBoost-SAMME weights on a hand-made case, its vote, and the boosting loop on a tiny task."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from modeldev_fakes import adam_trainer, tiny_task

from experiments.modeldev import boosting


def test_samme_update_hand_case():
    # 4 rows, uniform weights, 3 classes, the member misses row 2.
    weights, alpha, err = boosting.samme_update(np.full(4, 0.25), [True, True, False, True], 3)
    assert err == pytest.approx(0.25)
    assert alpha == pytest.approx(math.log(3) + math.log(2))    # log((1-e)/e) + log(K-1)
    # missed row: 0.25 * 6 = 1.5; others 0.25; normalised by 2.25
    np.testing.assert_allclose(weights, [1 / 9, 1 / 9, 2 / 3, 1 / 9])
    # second round from there: it misses row 0 only -> err = 1/9
    weights2, alpha2, err2 = boosting.samme_update(weights, [False, True, True, True], 3)
    assert err2 == pytest.approx(1 / 9)
    assert alpha2 == pytest.approx(math.log(8) + math.log(2))
    raw = np.asarray([1 / 9 * 16, 1 / 9, 2 / 3, 1 / 9])
    np.testing.assert_allclose(weights2, raw / raw.sum())


def test_samme_chance_member_gets_no_weight():
    weights, alpha, _ = boosting.samme_update(np.full(4, 0.25), [False, False, False, True], 2)
    assert alpha <= 0
    np.testing.assert_allclose(weights, np.full(4, 0.25))


def test_samme_vote_is_alpha_weighted():
    preds = np.asarray([[0, 1], [1, 1], [1, 0]])
    # member 0 alone outweighs the other two on row 0
    np.testing.assert_array_equal(boosting.samme_predict(preds, [3.0, 1.0, 1.0], 2), [0, 1])
    np.testing.assert_array_equal(boosting.samme_predict(preds, [1.0, 1.0, 1.0], 2), [1, 1])
    with pytest.raises(ValueError, match="one value per member"):
        boosting.samme_predict(preds, [1.0, 1.0], 2)


def test_adaboost_reweights_towards_misclassified_rows():
    task = tiny_task()
    fit = boosting.adaboost_samme(task, adam_trainer(), jnp.float32(1e-2), num_members=2)
    assert len(fit.alphas) == 2 and all(a > 0 for a in fit.alphas)
    labels = np.asarray(task.full_split("train")["y"])
    first = fit.weights[1]
    # after round 1, every misclassified row weighs exp(alpha) times a correct one
    ratio = first.max() / first.min()
    assert ratio == pytest.approx(math.exp(fit.alphas[0]), rel=1e-6)
    assert fit.weights.shape == (3, len(labels))


def test_hist_gradient_boosting_baseline():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)     # 3 classes
    (probs,) = boosting.hist_gradient_boosting(x[:80], y[:80], [x[80:]], max_iter=10)
    assert probs.shape == (40, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert (probs.argmax(1) == y[80:]).mean() >= 0.75
