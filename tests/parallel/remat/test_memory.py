"""parallel.remat.memory: compiled memory and saved residuals, compared within one compiled
family of programs (never wall times)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from remat_problems import DEEP, WIDTH

from parallel import remat


def test_temp_memory_ordered_none_dots_full(deep_mlp_stats):
    temp = {p: s.temp_bytes for p, s in deep_mlp_stats.items()}
    assert temp["none"] >= temp["dots"] >= temp["full"], temp
    assert temp["none"] >= 2 * temp["full"], temp  # per-block full remat keeps only carries
    residual = {p: s.residual_bytes for p, s in deep_mlp_stats.items()}
    assert residual["none"] > residual["dots"] > residual["full"], residual


def test_memory_stats_lists_residuals_with_sources(deep_mlp_stats):
    none, full = deep_mlp_stats["none"], deep_mlp_stats["full"]
    # The gradient step's parameters and outputs do not depend on the policy.
    assert none.argument_bytes == full.argument_bytes and none.output_bytes == full.output_bytes
    params_bytes = 2 * DEEP * WIDTH * 4 * WIDTH * 4
    assert {r.nbytes for r in full.residuals if r.is_argument} == {params_bytes // 2}
    # Without remat the scan keeps per-layer hidden activations (width 4 * WIDTH: the tanh output,
    # its input and the centred input's product); with full remat only the carries, one
    # (64, WIDTH) input per layer, stay.
    hidden = [r for r in none.residuals if r.shape == (DEEP, 64, 4 * WIDTH)]
    assert len(hidden) >= 2 and all("scan" in r.source for r in hidden), none.residuals
    assert not any(r.shape[-1] == 4 * WIDTH for r in full.residuals if not r.is_argument)
    assert any(r.shape == (DEEP, 64, WIDTH) for r in full.residuals)
    assert none.residual_bytes > 4 * full.residual_bytes
    assert remat.MemoryStats(**{**none._asdict()}).to_dict()["temp_bytes"] == none.temp_bytes


# What the child process runs: nothing of ours but `parallel`, so nothing else has imported the
# jax submodules memory_stats needs.
ONLY_PARALLEL = textwrap.dedent("""
    import json

    import jax

    from parallel import remat

    def loss(w, x):
        return jax.numpy.mean(jax.numpy.tanh(x @ w) ** 2)

    args = jax.ShapeDtypeStruct((8, 8), "float32"), jax.ShapeDtypeStruct((4, 8), "float32")
    stats = remat.memory_stats(loss, *args)
    print(json.dumps({"residual_bytes": stats.residual_bytes,
                      "sources": [r.source for r in stats.residuals]}))
""")


def test_memory_stats_runs_with_only_parallel_imported():
    """A fresh interpreter that imports nothing but `parallel` can measure memory (it used to
    need someone else to have imported `jax.ad_checkpoint` first)."""
    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-c", ONLY_PARALLEL], env=env, cwd=repo,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The tanh output (4 x 8 float32) is kept for the backward pass, and labelled.
    assert result["residual_bytes"] >= 4 * 8 * 4, result
    assert any("tanh" in source for source in result["sources"]), result


# ----------------------------------------------------------------- the zoo's Transformer LM

TRANSFORMER_POLICIES = ["none", "dots", "names:attn_qkv,mlp_hidden", "full"]


@pytest.fixture(scope="module")
def zoo_transformer():
    """models.transformer.TransformerLM, every block checkpointed through parallel.remat."""
    transformer = pytest.importorskip("models.transformer")
    from models.nets import Functional

    def net(policy):
        return Functional(
            lambda rngs: transformer.TransformerLM(
                vocab_size=16,
                seq_len=8,
                d_model=16,
                num_heads=2,
                num_layers=2,
                remat=policy != "none",
                remat_policy=policy,
                rngs=rngs,
            )
        )

    def loss_for(policy):
        apply = net(policy).apply

        def loss(params, tokens_BL):
            logits = apply(params, tokens_BL[:, :-1])
            log_probs = jax.nn.log_softmax(logits)
            return -jnp.mean(jnp.take_along_axis(log_probs, tokens_BL[:, 1:, None], axis=-1))

        return loss

    params = net("none").init(jax.random.key(6))
    tokens = jax.random.randint(jax.random.key(7), (4, 9), 0, 16)
    return loss_for, params, tokens


@pytest.mark.slow  # four compiled gradients of an NNX model
def test_zoo_transformer_gradients_and_residuals_under_policies(zoo_transformer):
    loss_for, params, tokens = zoo_transformer
    ref = jax.jit(jax.grad(loss_for("none")))(params, tokens)
    for policy in TRANSFORMER_POLICIES[1:]:
        grads = jax.jit(jax.grad(loss_for(policy)))(params, tokens)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads, ref
        )
    # The LM's blocks are a Python loop, not a scan: XLA:CPU then compiles the same temp bytes
    # with or without remat (its scheduler does not keep the recompute late), so what is checked
    # here is what the backward pass is given to keep: the saved residuals.
    saved = {
        p: sum(
            r.nbytes
            for r in remat.saved_residuals(loss_for(p), params, tokens)
            if not r.is_argument
        )
        for p in ("none", "dots", "full")
    }
    assert saved["none"] > saved["dots"] > saved["full"], saved
