"""Baselines a classifier must beat: random guessing, the zero rule, a simple heuristic.

    random_baseline(labels, "uniform")               # expected accuracy / F1, closed form
    random_baseline(labels, "label_distribution", train_labels=y_train)
    zero_rule_baseline(y_train, labels)              # always the most common TRAINING class
    heuristic_baseline(x_train, y_train, x_test, y_test, kind="logistic")

A random guesser draws each prediction independently from a distribution q over the classes
(q uniform, or the class frequencies of `train_labels`). Its expected confusion matrix is
E[C_ij] = n_i q_j, so per class c (prevalence p_c): precision p_c, recall q_c, and
accuracy = sum_c p_c q_c. The F1 given is the F1 of this expected confusion matrix,
2 p_c q_c / (p_c + q_c) (the F1 of one random draw fluctuates around it; the test simulates).
Worked case, 90 negatives and 10 positives, F1 of the positive class: uniform -> accuracy 0.5,
F1 1/6; label distribution -> accuracy 0.82, F1 0.10.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from experiments.evaluation import metrics as metrics_lib
from experiments.evaluation.checks import check_choice, check_labels, check_same_length

RANDOM_STRATEGIES = ("uniform", "label_distribution")
HEURISTICS = ("logistic", "nearest_centroid")


def _num_classes(num_classes, *label_arrays) -> int:
    highest = max(int(np.max(a)) for a in label_arrays) + 1
    if num_classes is None:
        return highest
    if num_classes < highest:
        raise ValueError(f"num_classes={num_classes} but labels go up to {highest - 1}")
    return int(num_classes)


def random_baseline(labels, strategy: str = "uniform", *, num_classes: int | None = None,
                    train_labels=None) -> dict:
    """Expected accuracy and per-class / macro F1 of random guessing on `labels` (closed form).

    Args:
      labels: (N,) the labels being predicted.
      strategy: "uniform" (each class with probability 1 / num_classes) or
        "label_distribution" (class frequencies of `train_labels`, else of `labels`).
      num_classes: the class count (default: largest label + 1).
      train_labels: where "label_distribution" takes its frequencies from.

        random_baseline([0] * 90 + [1] * 10, "label_distribution")["f1_per_class"][1]  # 0.1
    """
    check_choice(strategy, RANDOM_STRATEGIES, name="strategy")
    labels = check_labels(labels, num_classes)
    if train_labels is not None:
        train_labels = check_labels(train_labels, num_classes, name="train_labels")
    num_classes = _num_classes(num_classes, labels,
                               *(() if train_labels is None else (train_labels,)))
    prevalence = np.bincount(labels, minlength=num_classes) / len(labels)
    if strategy == "uniform":
        guess = np.full(num_classes, 1.0 / num_classes)
    else:
        source = labels if train_labels is None else train_labels
        guess = np.bincount(source, minlength=num_classes) / len(source)
    denominator = prevalence + guess
    f1 = np.divide(2 * prevalence * guess, denominator, out=np.zeros(num_classes),
                   where=denominator > 0)
    return {"strategy": strategy, "accuracy": float(prevalence @ guess),
            "f1_per_class": f1.tolist(), "f1_macro": float(f1.mean()),
            "precision_per_class": prevalence.tolist(), "recall_per_class": guess.tolist(),
            "guess_distribution": guess.tolist()}


def _scores(labels, preds, num_classes) -> dict:
    labels = np.asarray(labels)
    result = {"accuracy": float(np.mean(np.asarray(preds) == labels))}
    result.update(metrics_lib.precision_recall_f1(labels, preds, num_classes))
    return result


def zero_rule_baseline(train_labels, labels, *, num_classes: int | None = None) -> dict:
    """Scores of always predicting the most common class of `train_labels` on `labels`
    (ties: the smallest class index)."""
    train_labels = check_labels(train_labels, num_classes, name="train_labels")
    labels = check_labels(labels, num_classes)
    num_classes = _num_classes(num_classes, labels, train_labels)
    majority = int(np.argmax(np.bincount(train_labels, minlength=num_classes)))
    preds = np.full(len(labels), majority)
    return {"predicted_class": majority, **_scores(labels, preds, num_classes)}


def heuristic_baseline(x_train, y_train, x_eval, y_eval, *, kind: str = "logistic",
                       num_classes: int | None = None, seed: int = 0) -> dict:
    """A scikit-learn model on the raw (flattened, standardised) inputs, scored on the eval set.

    kind: "logistic" (multinomial logistic regression; also gives log loss and ROC-AUC from its
    probabilities) or "nearest_centroid".
    """
    check_choice(kind, HEURISTICS, name="kind")
    x_train = np.asarray(x_train, dtype=np.float64).reshape(len(x_train), -1)
    x_eval = np.asarray(x_eval, dtype=np.float64).reshape(len(x_eval), -1)
    check_same_length(x_train=x_train, y_train=np.asarray(y_train))
    check_same_length(x_eval=x_eval, y_eval=np.asarray(y_eval))
    y_train = check_labels(y_train, num_classes, name="y_train")
    y_eval = check_labels(y_eval, num_classes, name="y_eval")
    num_classes = _num_classes(num_classes, y_train, y_eval)
    if kind == "logistic":
        classifier = LogisticRegression(max_iter=500, random_state=seed)
    else:
        classifier = NearestCentroid()
    model = make_pipeline(StandardScaler(), classifier).fit(x_train, y_train)
    preds = model.predict(x_eval)
    result = {"kind": kind, **_scores(y_eval, preds, num_classes)}
    if kind == "logistic":
        probs = np.zeros((len(x_eval), num_classes))
        probs[:, model.classes_] = model.predict_proba(x_eval)
        result["log_loss"] = metrics_lib.log_loss(y_eval, probs)
        result["roc_auc_ovr"] = metrics_lib.roc_auc_ovr(y_eval, probs)[0]
    return result
