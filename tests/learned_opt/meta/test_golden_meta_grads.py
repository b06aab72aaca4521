"""Golden regression: the speed work on meta-training never changes what it computes.

A short PES and TBPTT run (digits-MLP group with label noise and a data subset, so task
construction and its random draws count; horizons short enough that tasks reset at different
steps) records, per outer step, the meta-loss, the number of resets and three summaries of the
meta-gradient (sum, sum of |g|, a sum weighted by a fixed random vector that catches permuted
entries). The numbers below were recorded from the code before the throughput work (commit
920c20c); a change must reproduce them up to float rounding.

Regenerate (only for an intended change of the estimators or tasks, never to make a speed-up
pass):
    .venv/bin/python -m tests.learned_opt.meta.test_golden_meta_grads
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import optax
import pytest

import learned_opt as lo
import models
from learned_opt import meta

NUM_OUTER_STEPS = 6
NUM_TASKS = 4
GROUP = models.families.MLPGroup((32,), "relu", 32, "meta_train")


def _summary(tree) -> list[float]:
    x = np.concatenate([np.asarray(v, np.float64).ravel() for v in jax.tree.leaves(tree)])
    weights = np.random.default_rng(x.size).uniform(-1.0, 1.0, size=x.size)
    return [float(x.sum()), float(np.abs(x).sum()), float((x * weights).sum())]


@functools.cache
def _trainer(estimator_name: str) -> meta.MetaTrainer:
    unroller = meta.TruncatedUnroller(
        models.get_family("digits_mlp"), GROUP, lo.get_lopt("mlp"), unroll_length=4,
        schedule=meta.LogUniformSchedule(8, 24))
    estimator = meta.get_estimator(estimator_name, sigma=0.01)
    # SGD on theta whose state keeps the last meta-gradient exactly (a trace with decay 0).
    outer_tx = optax.chain(optax.trace(decay=0.0), optax.scale(-1e-2))
    return meta.MetaTrainer(unroller, estimator, num_tasks=NUM_TASKS, outer_tx=outer_tx,
                            mesh=meta.population_mesh(jax.devices()[:1]))


def record(estimator_name: str) -> list[dict]:
    trainer = _trainer(estimator_name)
    lopt = lo.get_lopt("mlp")
    state = trainer.init(jax.random.key(3), lopt.init(jax.random.key(4)))
    rows = []
    for _ in range(NUM_OUTER_STEPS):
        state, metrics = trainer.step(state)
        grad = state.outer_opt_state[0].trace
        rows.append({"meta_loss": float(metrics["meta_loss"]),
                     "num_resets": int(metrics["num_resets"]), "grad": _summary(grad)})
    return rows


# Recorded from commit 920c20c (before the throughput work) with `record`.
GOLDEN: dict = {
    "pes": [   {   'grad': [0.6460798399202758, 18.359404946662835, 1.2865719170145034],
                   'meta_loss': 1.0121768712997437,
                   'num_resets': 0},
               {   'grad': [-1.8366636227437994, 53.515698297080235, 2.5720394389396906],
                   'meta_loss': 0.9827076196670532,
                   'num_resets': 0},
               {   'grad': [-1.3512991092575248, 25.46401761933521, -0.20310139441643127],
                   'meta_loss': 0.9661451578140259,
                   'num_resets': 1},
               {   'grad': [0.7183665890206612, 32.656187624526865, -1.0044105971160462],
                   'meta_loss': 0.9732710123062134,
                   'num_resets': 2},
               {   'grad': [1.0920608699525474, 18.971263153784093, 0.8724383057431515],
                   'meta_loss': 0.9731230139732361,
                   'num_resets': 1},
               {   'grad': [-2.0188341364992084, 17.74717679004243, 1.1179132161078131],
                   'meta_loss': 0.9217901229858398,
                   'num_resets': 0}],
    'tbptt': [   {   'grad': [-0.1867068150150471, 0.39512056179739513, -0.03733863979843642],
                     'meta_loss': 1.0121707916259766,
                     'num_resets': 0},
                 {   'grad': [-0.1712303682192864, 0.3820020236799744, -0.039159356040239734],
                     'meta_loss': 0.9827768206596375,
                     'num_resets': 0},
                 {   'grad': [-0.15520271123878795, 0.34139541082895897, -0.035534830556017055],
                     'meta_loss': 0.9664840698242188,
                     'num_resets': 1},
                 {   'grad': [-0.1661006527046821, 0.3686069241427915, -0.037127454731043785],
                     'meta_loss': 0.9738553762435913,
                     'num_resets': 2},
                 {   'grad': [-0.16092047539980037, 0.3570646913646396, -0.03721974121271268],
                     'meta_loss': 0.9739945530891418,
                     'num_resets': 1},
                 {   'grad': [-0.13857386804312044, 0.3195975241131158, -0.034049458814466874],
                     'meta_loss': 0.9230142831802368,
                     'num_resets': 0}]}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("estimator_name", ["pes", "tbptt"])
def test_meta_gradients_match_the_recording(estimator_name):
    rows = record(estimator_name)
    golden = GOLDEN[estimator_name]
    assert [r["num_resets"] for r in rows] == [r["num_resets"] for r in golden]
    assert sum(r["num_resets"] for r in rows) >= 2, "the run must exercise task resets"
    for got, want in zip(rows, golden, strict=True):
        np.testing.assert_allclose(got["meta_loss"], want["meta_loss"], rtol=1e-5)
        # Float reordering of a sum over ~1.5k meta-parameters: relative to the |g| scale.
        scale = want["grad"][1]
        np.testing.assert_allclose(got["grad"], want["grad"], rtol=1e-4, atol=1e-4 * scale)


if __name__ == "__main__":
    import pprint
    pprint.pprint({name: record(name) for name in ("pes", "tbptt")}, width=100)
