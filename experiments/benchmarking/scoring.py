"""One run's numbers under one protocol, and its comparison with a reference run (host NumPy).

A run is `learned_opt.training.Curves` on the host, every split evaluated (train_loss (S, T);
evals[split][metric] (S, E)). Per protocol:
  * optimization:   score = final smoothed training loss (trailing mean of `window` minibatch
                    losses); speedup to the reference's final smoothed training loss
                    (`metrics.speedup_of`); normalised by the reference's initial (step-0 train
                    evaluation) and final training loss.
  * generalization: the evaluation with the best validation loss (per seed: early stopping);
                    score = test loss there; test loss / accuracy also at the end; speedup to
                    the reference's best validation loss (`metrics.eval_speedup_of`);
                    normalised by the reference's initial and best-validation test loss.
`won`: the run's seed-mean score is strictly below the reference's.

    run = protocol_run(curves, "generalization", window=20, stride=5)
    run["vs"] = {"adam": compare(curves, adam_curves, "generalization", window=20)}
"""

from __future__ import annotations

import numpy as np

from experiments.benchmarking import metrics as bm

FINAL_SPLITS = ("train", "valid", "test")
SCORES = {"optimization": "final smoothed train loss",
          "generalization": "test loss at the best-validation evaluation"}


def _np(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _json_curve(values) -> list:
    return [[bm.finite_or_none(v) for v in row] for row in np.asarray(values)]


def best_valid_index(curves) -> np.ndarray:
    """(S,) index of each seed's best validation evaluation (non-finite never best; the first
    evaluation when nothing is finite)."""
    valid = _np(curves.evals["valid"]["loss"])
    return np.argmin(np.where(np.isfinite(valid), valid, np.inf), axis=1)


def seed_scores(curves, protocol: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(score_S, initial_S): the protocol's per-seed score and its value at initialisation."""
    if protocol == "optimization":
        train = _np(curves.train_loss)
        score = np.array([bm.smooth(seed, window)[-1] for seed in train])
        return score, _np(curves.evals["train"]["loss"])[:, 0]
    test = _np(curves.evals["test"]["loss"])
    return test[np.arange(test.shape[0]), best_valid_index(curves)], test[:, 0]


def _speedups(curves, reference, protocol: str, window: int):
    if protocol == "optimization":
        ours, theirs = _np(curves.train_loss), _np(reference.train_loss)
        mean = bm.speedup_of(theirs.mean(0), ours.mean(0), window)
        seeds = [bm.speedup_of(a, b, window) for a, b in zip(theirs, ours, strict=True)]
    else:
        steps = _np(curves.eval_steps)
        ours = _np(curves.evals["valid"]["loss"])
        theirs = _np(reference.evals["valid"]["loss"])
        mean = bm.eval_speedup_of(theirs.mean(0), ours.mean(0), steps)
        seeds = [bm.eval_speedup_of(a, b, steps) for a, b in zip(theirs, ours, strict=True)]
    return mean, seeds


def compare(curves, reference, protocol: str, window: int) -> dict:
    """Speedup, normalised score and win of `curves` against `reference` (same seeds, paired)."""
    mean, seeds = _speedups(curves, reference, protocol, window)
    score, _ = seed_scores(curves, protocol, window)
    ref_score, ref_initial = seed_scores(reference, protocol, window)
    normalized = [bm.normalized_loss(float(s), float(i), float(f))
                  for s, i, f in zip(score, ref_initial, ref_score, strict=True)]
    ours, theirs = float(np.mean(score)), float(np.mean(ref_score))
    return {
        "speedup": {"target": bm.finite_or_none(mean.target),
                    "reference_steps": mean.reference_steps, "steps": mean.steps,
                    "speedup": mean.speedup, "per_seed": [r.speedup for r in seeds]},
        # +inf (diverged) -> null, NaN (reference did not improve: no scale) -> null as well;
        # `normalized_status` tells them apart.
        "normalized_loss": [bm.finite_or_none(v) for v in normalized],
        "normalized_status": ["ok" if np.isfinite(v) else ("diverged" if v > 0 else "no_scale")
                              for v in normalized],
        "won": bool(np.isfinite(ours) and ours < theirs),
    }


def protocol_run(curves, protocol: str, window: int, stride: int) -> dict:
    """The protocol's numbers of one run (no comparison): final values at the last evaluation,
    the protocol score, early-stopping values (generalization) and downsampled curves."""
    train_loss = _np(curves.train_loss)
    per_seed, final = {}, {}
    for split in FINAL_SPLITS:
        for metric, values in curves.evals[split].items():
            if split != "test" and metric != "loss":
                continue
            key = f"{split}_{metric}"
            last = _np(values)[:, -1]
            per_seed[key] = [bm.finite_or_none(v) for v in last]
            final[key] = bm.summarize(last)
    score, initial = seed_scores(curves, protocol, window)
    out = {
        "final": final, "per_seed": per_seed,
        "score": {"name": SCORES[protocol], **bm.summarize(score),
                  "per_seed": [bm.finite_or_none(v) for v in score],
                  "initial_per_seed": [bm.finite_or_none(v) for v in initial]},
        "diverged": [bm.diverged(seed_curve, window) for seed_curve in train_loss],
    }
    if protocol == "generalization":
        best = best_valid_index(curves)
        rows = np.arange(best.size)
        valid = _np(curves.evals["valid"]["loss"])
        at_best = {"eval_step": [int(_np(curves.eval_steps)[i]) for i in best],
                   "valid_loss": bm.summarize(valid[rows, best])}
        for metric, values in curves.evals["test"].items():
            chosen = _np(values)[rows, best]
            at_best[f"test_{metric}"] = bm.summarize(chosen)
            at_best[f"test_{metric}_per_seed"] = [bm.finite_or_none(v) for v in chosen]
        out["at_best_valid"] = at_best
    smoothed = np.stack([bm.smooth(seed_curve, window) for seed_curve in train_loss])
    out["curves"] = {
        "eval_steps": [int(s) for s in curves.eval_steps],
        **{split: {m: _json_curve(v) for m, v in curves.evals[split].items()}
           for split in FINAL_SPLITS},
        "train_loss_steps": list(range(0, train_loss.shape[1], stride)),
        "train_loss_smoothed": _json_curve(smoothed[:, ::stride]),
    }
    return out
