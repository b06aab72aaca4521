"""Classification and language-model metrics from predicted probabilities and labels.

Every number comes from `sklearn.metrics`; this module only validates inputs and names results.

    metrics = classification_metrics(labels, probs)      # labels (N,), probs (N, C)
    metrics["accuracy"], metrics["f1_macro"], metrics["f1_per_class"], metrics["roc_auc_ovr"]
    language_model_metrics(next_tokens, probs)           # {"log_loss", "perplexity", ...}
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn import metrics as skm

from experiments.evaluation.checks import check_labels_preds, check_labels_probs

# Scalar metrics of `classification_metrics`, in report order. A bootstrap interval is
# computed for each (see `uncertainty.metrics_with_intervals`).
SCALAR_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc_ovr",
                  "log_loss")


def accuracy(labels, probs) -> float:
    """Fraction of examples whose most probable class is the label."""
    labels, probs = check_labels_probs(labels, probs)
    return float(skm.accuracy_score(labels, probs.argmax(axis=1)))


def precision_recall_f1(labels, preds, num_classes: int) -> dict:
    """Macro and per-class precision, recall and F1 of predicted classes (0 where undefined)."""
    labels, preds = check_labels_preds(labels, preds, num_classes)
    classes = np.arange(num_classes)
    per_class = skm.precision_recall_fscore_support(labels, preds, labels=classes,
                                                    zero_division=0)
    macro = skm.precision_recall_fscore_support(labels, preds, labels=classes, average="macro",
                                                zero_division=0)
    result = {}
    for index, name in enumerate(("precision", "recall", "f1")):
        result[f"{name}_macro"] = float(macro[index])
        result[f"{name}_per_class"] = per_class[index].astype(float).tolist()
    result["support_per_class"] = per_class[3].astype(int).tolist()
    return result


def roc_auc_ovr(labels, probs) -> tuple[float, list[float]]:
    """(macro, per-class) one-vs-rest ROC-AUC; a class absent from (or all of) `labels` has no
    AUC: NaN in the per-class list, left out of the macro mean (NaN if no class has one)."""
    labels, probs = check_labels_probs(labels, probs)
    per_class = []
    for cls in range(probs.shape[1]):
        positives = labels == cls
        if positives.all() or not positives.any():
            per_class.append(math.nan)
        else:
            per_class.append(float(skm.roc_auc_score(positives, probs[:, cls])))
    defined = [v for v in per_class if not math.isnan(v)]
    return (float(np.mean(defined)) if defined else math.nan), per_class


def log_loss(labels, probs) -> float:
    """Mean negative log-likelihood of the labels, in nats."""
    labels, probs = check_labels_probs(labels, probs)
    return float(skm.log_loss(labels, probs, labels=np.arange(probs.shape[1])))


def confusion_matrix(labels, preds, num_classes: int) -> list[list[int]]:
    """Counts [true class][predicted class], every class present as a row and a column."""
    labels, preds = check_labels_preds(labels, preds, num_classes)
    return skm.confusion_matrix(labels, preds, labels=np.arange(num_classes)).tolist()


def classification_metrics(labels, probs) -> dict:
    """Every classification metric of one split as a JSON-able dict.

    Keys: SCALAR_METRICS, the per-class lists `precision_per_class`, `recall_per_class`,
    `f1_per_class`, `support_per_class`, `roc_auc_per_class`, `confusion_matrix` and
    `num_examples`.

        classification_metrics([0, 1, 1], [[.8, .2], [.4, .6], [.7, .3]])["accuracy"]  # 2/3
    """
    labels, probs = check_labels_probs(labels, probs)
    num_classes = probs.shape[1]
    preds = probs.argmax(axis=1)
    result = {"num_examples": int(len(labels)), "accuracy": accuracy(labels, probs)}
    result.update(precision_recall_f1(labels, preds, num_classes))
    result["roc_auc_ovr"], result["roc_auc_per_class"] = roc_auc_ovr(labels, probs)
    result["log_loss"] = log_loss(labels, probs)
    result["confusion_matrix"] = confusion_matrix(labels, preds, num_classes)
    return result


def language_model_metrics(next_tokens, probs) -> dict:
    """Log loss (nats per token), perplexity and bits per character of a character LM.

    `next_tokens` (N,) are the true next characters, `probs` (N, V) the model's distribution
    over the vocabulary at each position. Perplexity = exp(log loss); bits per character =
    log loss / ln 2 (one token per character).
    """
    labels, probs = check_labels_probs(next_tokens, probs)
    nats = log_loss(labels, probs)
    return {"num_tokens": int(len(labels)), "log_loss": nats, **lm_metrics_from_nll(nats)}


def lm_metrics_from_nll(mean_nll_nats: float) -> dict:
    """Perplexity and bits per character from a mean next-token loss in nats (a task's loss)."""
    mean_nll_nats = float(mean_nll_nats)
    if not math.isfinite(mean_nll_nats) or mean_nll_nats < 0:
        raise ValueError(f"mean_nll_nats must be a finite non-negative loss; got {mean_nll_nats}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        perplexity = float(np.exp(mean_nll_nats))
    return {"perplexity": perplexity, "bits_per_character": mean_nll_nats / math.log(2)}
