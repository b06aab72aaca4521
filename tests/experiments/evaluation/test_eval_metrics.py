"""Metrics against hand-computed cases, LM metrics, and the ValueErrors on bad input."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from experiments.evaluation import metrics

# 3 classes, 6 examples; predictions [0, 1, 1, 2, 2, 2] (4 of 6 right).
LABELS = np.array([0, 0, 1, 1, 2, 2])
PROBS = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.2, 0.5, 0.3],
                  [0.1, 0.3, 0.6], [0.1, 0.1, 0.8], [0.1, 0.2, 0.7]])


def test_classification_metrics_match_the_hand_computed_case():
    result = metrics.classification_metrics(LABELS, PROBS)
    assert result["accuracy"] == pytest.approx(4 / 6)
    # precision: class 0 predicted once (right), class 1 twice (1 right), class 2 thrice (2).
    assert result["precision_per_class"] == pytest.approx([1.0, 0.5, 2 / 3])
    assert result["recall_per_class"] == pytest.approx([0.5, 0.5, 1.0])
    assert result["f1_per_class"] == pytest.approx([2 / 3, 0.5, 0.8])
    assert result["f1_macro"] == pytest.approx((2 / 3 + 0.5 + 0.8) / 3)
    assert result["precision_macro"] == pytest.approx((1 + 0.5 + 2 / 3) / 3)
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    # one-vs-rest AUC: class 0 and 2 separate perfectly; class 1 wins 6 of 8 pairs.
    assert result["roc_auc_per_class"] == pytest.approx([1.0, 0.75, 1.0])
    assert result["roc_auc_ovr"] == pytest.approx(2.75 / 3)
    assert result["roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(LABELS, PROBS,
                                                                    multi_class="ovr"))
    p_true = np.array([0.7, 0.3, 0.5, 0.3, 0.8, 0.7])
    assert result["log_loss"] == pytest.approx(-np.mean(np.log(p_true)))
    assert result["support_per_class"] == [2, 2, 2]


def test_a_class_absent_from_the_labels_has_no_auc_and_no_division_error():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]])
    macro, per_class = metrics.roc_auc_ovr(labels, probs)
    assert math.isnan(per_class[2]) and per_class[:2] == [1.0, 1.0] and macro == 1.0
    result = metrics.classification_metrics(labels, probs)
    assert result["f1_per_class"][2] == 0.0 and result["confusion_matrix"][2] == [0, 0, 0]


def test_language_model_metrics_of_a_uniform_model():
    vocab = 4
    probs = np.full((10, vocab), 1 / vocab)
    result = metrics.language_model_metrics(np.arange(10) % vocab, probs)
    assert result["log_loss"] == pytest.approx(math.log(4))
    assert result["perplexity"] == pytest.approx(4.0)
    assert result["bits_per_character"] == pytest.approx(2.0)
    assert metrics.lm_metrics_from_nll(math.log(2))["bits_per_character"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="mean_nll_nats"):
        metrics.lm_metrics_from_nll(float("nan"))


@pytest.mark.parametrize("labels, probs, message", [
    (LABELS[:5], PROBS, "same number of examples"),
    (LABELS, PROBS * 1.1, "sum to 1"),
    (np.array([0, 0, 1, 1, 2, 3]), PROBS, "class range"),
    (np.array([0, 0, 1, 1, 2, -1]), PROBS, "class range"),
    (LABELS + 0.5, PROBS, "integer"),
    (LABELS, PROBS[:, :1], "num_classes >= 2"),
    (LABELS, np.where(PROBS == 0.7, np.nan, PROBS), "non-finite"),
    (LABELS[:0], PROBS[:0], "empty"),
])
def test_bad_input_is_a_clear_value_error(labels, probs, message):
    with pytest.raises(ValueError, match=message):
        metrics.classification_metrics(labels, probs)


def test_float32_softmax_rows_are_accepted_and_renormalised():
    probs32 = (PROBS + 1e-5).astype(np.float32)
    assert metrics.log_loss(LABELS, probs32) == pytest.approx(metrics.log_loss(LABELS, PROBS),
                                                              abs=1e-4)
