"""Slice-based evaluation: metrics per slice, Simpson's paradox, a finder of high-error slices.

    slices = {**class_slices(labels, 10), **feature_slices(features, names)}
    table = slice_metrics(labels, probs, slices)          # {slice: {"size", "accuracy", ...}}
    simpsons_paradox({"small": {"A": (81, 87), "B": (234, 270)},
                      "large": {"A": (192, 263), "B": (55, 80)}})["paradox"]   # True
    find_error_slices(errors, features, names)             # top slices, with p-values

A slice is a boolean mask over the examples (or a function of the inputs returning one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy import stats
from sklearn.tree import DecisionTreeClassifier

from experiments.evaluation import metrics as metrics_lib
from experiments.evaluation.checks import check_labels_probs, check_same_length
from experiments.evaluation.uncertainty import bootstrap_mean


def class_slices(labels, num_classes: int) -> dict[str, np.ndarray]:
    """One slice per true class: {"class=c": labels == c}."""
    labels = np.asarray(labels)
    return {f"class={c}": labels == c for c in range(num_classes)}


def feature_slices(features, names, *, num_bins: int = 4) -> dict[str, np.ndarray]:
    """Slices of task metadata: one per value of a feature with <= num_bins distinct values,
    else one per quantile bin ("name in [low, high)")."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != len(names):
        raise ValueError(f"features must be (num_examples, {len(names)}) for names {names}; "
                         f"got shape {features.shape}")
    slices = {}
    for column, name in zip(features.T, names, strict=True):
        values = np.unique(column)
        if len(values) <= num_bins:
            slices.update({f"{name}={v:g}": column == v for v in values})
            continue
        edges = np.unique(np.quantile(column, np.linspace(0, 1, num_bins + 1)))
        bins = np.clip(np.searchsorted(edges, column, side="right") - 1, 0, len(edges) - 2)
        for b in range(len(edges) - 1):
            closing = "]" if b == len(edges) - 2 else ")"
            slices[f"{name} in [{edges[b]:.3g}, {edges[b + 1]:.3g}{closing}"] = bins == b
    return slices


def apply_slice_functions(functions: Mapping[str, Callable], inputs) -> dict[str, np.ndarray]:
    """User-defined slices: {name: fn(inputs) -> boolean mask (N,)}."""
    return {name: np.asarray(fn(inputs), dtype=bool) for name, fn in functions.items()}


def slice_metrics(labels, probs, slices: Mapping[str, np.ndarray], *, min_size: int = 1,
                  intervals: bool = True, seed: int = 0, n_resamples: int = 1000) -> dict:
    """Per slice: size, accuracy (with a bootstrap interval), error, log loss.

    An empty slice (or one smaller than `min_size`) is a ValueError naming it.
    """
    labels, probs = check_labels_probs(labels, probs)
    correct = probs.argmax(axis=1) == labels
    result = {}
    for name, mask in slices.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != labels.shape:
            raise ValueError(f"slice {name!r} has mask shape {mask.shape}; expected "
                             f"{labels.shape}")
        size = int(mask.sum())
        if size < max(min_size, 1):
            raise ValueError(f"slice {name!r} is empty or too small: {size} examples "
                             f"(min_size={max(min_size, 1)})")
        entry = {"size": size, "accuracy": float(correct[mask].mean()),
                 "error": float(1 - correct[mask].mean()),
                 "log_loss": metrics_lib.log_loss(labels[mask], probs[mask])}
        if intervals:
            entry["accuracy_interval"] = bootstrap_mean(
                correct[mask], seed=seed, n_resamples=n_resamples).as_dict()
        result[name] = entry
    return result


def _check_counts(successes, total, where):
    if not (0 <= successes <= total) or total <= 0:
        raise ValueError(f"{where}: need 0 <= successes <= total and total > 0; got "
                         f"({successes}, {total})")


def simpsons_paradox(table: Mapping[str, Mapping[str, tuple[int, int]]]) -> dict:
    """Does the winner of every slice lose on the pooled data?

    Args:
      table: {slice: {model: (successes, total)}} for exactly two models (or optimizers),
        every slice holding both.

    Returns:
      {"paradox": bool, "slice_winners": {slice: model or "tie"}, "pooled_winner",
       "rates": {slice: {model: rate}}, "pooled_rates": {model: rate}}. The paradox fires when
      one model has the strictly higher success rate in every slice and the strictly lower
      pooled rate.
    """
    if len(table) < 2:
        raise ValueError(f"need at least 2 slices; got {list(table)}")
    models = sorted({m for counts in table.values() for m in counts})
    if len(models) != 2:
        raise ValueError(f"need exactly 2 models across the slices; got {models}")
    pooled = {m: [0, 0] for m in models}
    rates, winners = {}, {}
    for name, counts in table.items():
        if set(counts) != set(models):
            raise ValueError(f"slice {name!r} has models {sorted(counts)}; expected {models}")
        rates[name] = {}
        for model in models:
            successes, total = counts[model]
            _check_counts(successes, total, f"slice {name!r}, model {model!r}")
            pooled[model][0] += successes
            pooled[model][1] += total
            rates[name][model] = successes / total
        a, b = (rates[name][m] for m in models)
        winners[name] = models[0] if a > b else models[1] if b > a else "tie"
    pooled_rates = {m: s / t for m, (s, t) in pooled.items()}
    a, b = (pooled_rates[m] for m in models)
    pooled_winner = models[0] if a > b else models[1] if b > a else "tie"
    slice_winner = set(winners.values())
    paradox = (len(slice_winner) == 1 and "tie" not in slice_winner
               and pooled_winner not in ("tie", *slice_winner))
    return {"paradox": bool(paradox), "slice_winners": winners, "pooled_winner": pooled_winner,
            "rates": rates, "pooled_rates": pooled_rates}


def success_table(correct: Mapping[str, np.ndarray], slices: Mapping[str, np.ndarray]) -> dict:
    """{slice: {model: (num correct, size)}} from per-example correctness of each model on the
    same examples, for `simpsons_paradox`."""
    table = {}
    for name, mask in slices.items():
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            raise ValueError(f"slice {name!r} is empty")
        table[name] = {model: (int(np.asarray(c)[mask].sum()), int(mask.sum()))
                       for model, c in correct.items()}
    return table


def _node_conditions(tree, names) -> dict[int, list[str]]:
    """node id -> the conditions on the path from the root to it."""
    conditions = {0: []}
    structure = tree.tree_
    for node in range(structure.node_count):
        left, right = structure.children_left[node], structure.children_right[node]
        if left == -1:
            continue
        feature, threshold = names[structure.feature[node]], structure.threshold[node]
        conditions[left] = conditions[node] + [f"{feature} <= {threshold:.4g}"]
        conditions[right] = conditions[node] + [f"{feature} > {threshold:.4g}"]
    return conditions


def find_error_slices(errors, features, names, *, max_depth: int = 3, min_size: int = 20,
                      alpha: float = 0.05, top_k: int = 5, holdout_fraction: float = 0.5,
                      seed: int = 0) -> dict:
    """Slices (conjunctions of feature thresholds) whose error rate is well above average.

    A shallow decision tree (sklearn) is fitted to predict `errors` from `features` on a
    random `1 - holdout_fraction` of the examples; every node of it is a candidate slice. Each
    candidate is then tested on the held-out examples only (so the search does not bias the
    test): a one-sided binomial test (scipy) of its error count against the held-out overall
    error rate, with a Benjamini-Hochberg correction over the candidates. `holdout_fraction=0`
    tests on the search data itself (optimistic; reported as such).

    Returns {"overall_error", "tested_on", "slices": [up to top_k dicts with "description",
    "conditions", "size" (all examples), "error", "tested_size", "tested_error", "p_value",
    "adjusted_p_value", "significant"]}, most significant first.
    """
    errors = np.asarray(errors, dtype=bool)
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != len(names):
        raise ValueError(f"features must be (num_examples, {len(names)}) for names "
                         f"{list(names)}; got shape {features.shape}")
    num_examples = check_same_length(errors=errors, features=features)
    if not 0 <= holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in [0, 1); got {holdout_fraction}")
    if min_size < 1 or max_depth < 1:
        raise ValueError(f"min_size and max_depth must be positive; got {min_size}, {max_depth}")
    order = np.random.default_rng(seed).permutation(num_examples)
    num_test = int(round(holdout_fraction * num_examples))
    test_index = order[:num_test] if num_test else order
    search_index = order[num_test:]
    result = {"overall_error": float(errors.mean()),
              "tested_on": "held-out half" if num_test else "search data (optimistic)",
              "slices": []}
    if errors[search_index].all() or not errors[search_index].any():
        return result  # nothing to separate
    tree = DecisionTreeClassifier(max_depth=max_depth, min_samples_leaf=min_size,
                                  random_state=seed)
    tree.fit(features[search_index], errors[search_index])
    conditions = _node_conditions(tree, list(names))
    node_of_all = tree.decision_path(features).toarray().astype(bool)  # (N, nodes)
    base_rate = float(errors[test_index].mean())
    candidates = []
    for node, path in conditions.items():
        if node == 0:
            continue
        members = node_of_all[:, node]
        tested = members[test_index]
        tested_size = int(tested.sum())
        if tested_size == 0:
            continue
        tested_errors = int(errors[test_index][tested].sum())
        p_value = stats.binomtest(tested_errors, tested_size, base_rate,
                                  alternative="greater").pvalue if 0 < base_rate < 1 else 1.0
        candidates.append({"description": " and ".join(path), "conditions": path,
                           "size": int(members.sum()), "error": float(errors[members].mean()),
                           "tested_size": tested_size,
                           "tested_error": tested_errors / tested_size, "p_value": p_value})
    if not candidates:
        return result
    adjusted = stats.false_discovery_control([c["p_value"] for c in candidates], method="bh")
    for candidate, p_adjusted in zip(candidates, adjusted, strict=True):
        candidate["adjusted_p_value"] = float(p_adjusted)
        candidate["significant"] = bool(p_adjusted < alpha
                                        and candidate["tested_error"] > base_rate)
    candidates.sort(key=lambda c: (c["adjusted_p_value"], -c["tested_error"]))
    result["slices"] = candidates[:top_k]
    return result
