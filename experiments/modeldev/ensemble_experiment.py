"""What `python -m experiments.ensembles` runs: bagging, seed ensembles, boosting, stacking and
diversity, for members trained by tuned Adam, by each shipped learned optimizer, and mixed.

Protocol: every learning rate is tuned on one task with `benchmarking.tuning` under
`config.protocol` (generalization: the validation loss; optimization: the final training loss)
with the same grid budget for every optimizer; members train on the train split (bootstrap
resamples for bagging); temperatures are fitted on valid; every score is on test.

    results, report_md, figures = run_ensembles(config, workdir)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import models
from experiments.modeldev import (
    bagging,
    boosting,
    combine,
    diversity,
    members,
    optimizers,
    report,
    scores,
    stacking,
)

SKLEARN_LEARNERS = ("logistic", "knn", "random_forest")


def _sklearn_learner(name: str, seed: int) -> stacking.SklearnLearner:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    makers = {"logistic": lambda: LogisticRegression(max_iter=500),
              "knn": lambda: KNeighborsClassifier(n_neighbors=5),
              "random_forest": lambda: RandomForestClassifier(n_estimators=100,
                                                              random_state=seed)}
    if name not in makers:
        raise ValueError(f"unknown sklearn learner {name!r}; expected some of {SKLEARN_LEARNERS}")
    return stacking.SklearnLearner(f"sklearn_{name}", makers[name])


def _task(name: str, kwargs) -> object:
    return models.get_task(name, **dict(kwargs))


class _Tuned:
    """One optimizer tuned on one task, with its member trainer (compiled once per M)."""

    def __init__(self, task, name, config, workdir, tag):
        tunable = optimizers.build_tunable(name, num_steps=config.num_steps,
                                           lr_decades=config.lr_decades)
        spec = optimizers.tuning_spec(config.protocol, num_steps=config.num_steps,
                                      seeds=config.tuning_seeds,
                                      grid_points=config.tuning_grid_points)
        self.name = name
        self.tuning = optimizers.tune_learning_rate(task, tunable, spec, workdir=workdir,
                                                    study=f"ensembles/{tag}")
        self.tx_args = {"learning_rate": jnp.float32(self.tuning["learning_rate"])}
        self.trainer = members.make_member_trainer(task, tunable.make_tx,
                                                   num_steps=config.num_steps)


def _ensemble_entry(kind, probs, labels, best_member) -> dict:
    """Scores of the averaged and the voted ensemble, and the diversity of the members."""
    entry = {"kind": kind, "num_members": int(probs["test"].shape[0]),
             "average": scores.score_probs(labels["valid"], combine.average_probs(probs["valid"]),
                                           labels["test"], combine.average_probs(probs["test"])),
             "vote_test_accuracy": float(np.mean(combine.majority_vote(probs["test"])
                                                 == labels["test"]))}
    entry["diversity"] = diversity.diversity_summary(
        probs["test"], labels["test"], combine.average_probs(probs["test"]),
        best_member=best_member)
    return entry


def _best_on_valid(probs_valid, labels_valid) -> int:
    return int(np.argmax((probs_valid.argmax(-1) == labels_valid[None]).mean(axis=1)))


def _member_probs(task, params):
    return {s: members.member_outputs(task, params, s) for s in ("valid", "test")}


def run_ensembles(config, workdir) -> tuple[dict, str, list[Path]]:
    """Run every ensemble of the config; returns (results, report markdown, figure paths)."""
    if config.num_members < 2:
        raise ValueError(f"num_members must be >= 2 for an ensemble; got {config.num_members}")
    workdir = Path(workdir)
    start = time.time()
    task = _task(config.task, config.task_kwargs)
    data = stacking.split_arrays(task)
    labels = {s: data[s][1].astype(np.int64) for s in ("valid", "test")}
    names = optimizers.parse_optimizers(config.optimizers)
    tuned = {n: _Tuned(task, n, config, workdir, f"{config.task}/main") for n in names}
    results = {"protocol": config.protocol, "task": config.task,
               "task_kwargs": dict(config.task_kwargs), "num_steps": config.num_steps,
               "optimizers": names, "tuning": {n: t.tuning for n, t in tuned.items()},
               "ensembles": {}, "member_seed": config.member_seed}
    seed_probs = {}
    for name, opt in tuned.items():
        for kind, bootstrap in (("seeds", False), ("bagging", True)):
            fitted = bagging.train_bagging(task, opt.trainer, opt.tx_args,
                                           num_members=config.num_members,
                                           seed=config.member_seed, bootstrap=bootstrap)
            probs = _member_probs(task, fitted.params)
            if kind == "seeds":
                seed_probs[name] = probs
            best = _best_on_valid(probs["valid"], labels["valid"])
            results["ensembles"][f"{kind}/{name}"] = _ensemble_entry(kind, probs, labels, best)
    if len(names) > 1:
        # Mixed: members round-robin from each optimizer's seed ensemble, M in all.
        picks = [(names[m % len(names)], m // len(names)) for m in range(config.num_members)]
        probs = {s: np.stack([seed_probs[n][s][i] for n, i in picks]) for s in labels}
        best = _best_on_valid(probs["valid"], labels["valid"])
        entry = _ensemble_entry("mixed", probs, labels, best)
        entry["members"] = [f"{n}#{i}" for n, i in picks]
        results["ensembles"]["mixed/" + "+".join(names)] = entry
    results["boosting"] = _boosting(config, workdir, data, labels)
    results["stacking"] = _stacking(config, workdir, task, tuned, data, labels)
    results["wall_time_s"] = time.time() - start
    figures = report.ensemble_figures(results, workdir)
    return results, report.ensemble_markdown(results), figures


def _boosting(config, workdir, data, labels) -> dict:
    small = _task(config.task, {**dict(config.task_kwargs), "hidden": tuple(config.boost_hidden)})
    adam = _Tuned(small, "adam", config, workdir, f"{config.task}/boost_small")
    fit = boosting.adaboost_samme(small, adam.trainer, adam.tx_args,
                                  num_members=config.boosting_members, seed=config.member_seed)
    preds = {s: members.member_outputs(small, fit.params, s).argmax(-1) for s in labels}
    num_classes = int(small.data.num_classes)
    probs = {s: boosting.samme_probs(preds[s], fit.alphas, num_classes) for s in labels}
    out = {"members": f"digits-size MLP hidden={tuple(config.boost_hidden)}, tuned Adam",
           "tuning": adam.tuning, "alphas": fit.alphas, "train_errors": fit.errors,
           "stopped_early": fit.stopped_early, "num_members": len(fit.alphas),
           "samme_test_accuracy": float(np.mean(
               boosting.samme_predict(preds["test"], fit.alphas, num_classes) == labels["test"])),
           "first_member_test_accuracy": float(np.mean(preds["test"][0] == labels["test"])),
           "samme": scores.score_probs(labels["valid"], probs["valid"], labels["test"],
                                       probs["test"])}
    hgb = boosting.hist_gradient_boosting(data["train"][0], data["train"][1],
                                          [data["valid"][0], data["test"][0]],
                                          max_iter=config.hgb_max_iter, seed=config.seed)
    out["hist_gradient_boosting"] = scores.score_probs(labels["valid"], hgb[0],
                                                       labels["test"], hgb[1])
    return out


def _stacking(config, workdir, task, tuned, data, labels) -> dict:
    learners = [stacking.NetworkLearner(f"{config.task}_{n}", task, t.trainer, t.tx_args,
                                        config.member_seed) for n, t in tuned.items()]
    for spec in config.stacking_tasks:
        name, _, kwargs_text = spec.partition(":")
        other = _task(name, json.loads(kwargs_text) if kwargs_text else {})
        adam = _Tuned(other, "adam", config, workdir, f"{spec}/stack")
        learners.append(stacking.NetworkLearner(f"{spec}_adam", other, adam.trainer,
                                                adam.tx_args, config.member_seed))
    learners += [_sklearn_learner(n, config.seed) for n in config.stacking_sklearn]
    result = stacking.stack(learners, data, num_folds=config.stacking_folds, seed=config.seed)
    base = {name: scores.score_probs(labels["valid"], p["valid"], labels["test"], p["test"])
            for name, p in result.base_probs.items()}
    oof_accuracy = {name: float(np.mean(oof.argmax(1) == data["train"][1]))
                    for name, oof in result.oof.items()}
    best = max(base, key=lambda n: base[n]["valid_accuracy"])
    stacked = scores.score_probs(labels["valid"], result.probs["valid"], labels["test"],
                                 result.probs["test"])
    return {"learners": [learner.name for learner in learners], "folds": config.stacking_folds,
            "meta_learner": "sklearn LogisticRegression on concatenated out-of-fold "
                            "probabilities of the train split",
            "base": base, "oof_train_accuracy": oof_accuracy, "stacked": stacked,
            "best_base_on_valid": best,
            "gain_over_best_base": stacked["test_accuracy"] - base[best]["test_accuracy"]}
