"""Full train steps (forward + backward + update) of ~10M-parameter models, as ratios to Adam.

The train-step half of `experiments.bench_update` (which runs it from its command line; see
there). Each model's step (params and state donated) is timed for every optimizer in one
round-robin, with XLA's FLOPs of forward + backward and of the update on that model, so the
reader sees why a ratio is what it is, and whether AdafacMLPLOpt meets the issue's target
(<= 1.3x Adam):
  * the MLP classifier (10.5M params at `train_widths`) at a sweep of batch sizes
    (`train_batches`, default 128, 512, 2048). Batch 128 is the worst case for a per-parameter
    optimizer: forward + backward do only ~6 * 128 FLOPs per parameter, so the update's FLOPs
    weigh most;
  * the zoo's causal Transformer LM (`text_transformer`, 10.7M params in nanoGPT's
    shakespeare-char shape: 6 layers, d_model 384, 6 heads, 97-character vocabulary) at 16
    sequences x 128 tokens. A language model reuses each weight at every token, so forward +
    backward do ~6 * 2048 FLOPs per parameter (nanoGPT trains this shape at 64 x 256).

    models = train_models(config)          # zero-argument builders, built one at a time
    rows = bench_train_step(config, models[0]())
    print(target_summary(rows))            # "Target `adafac_mlp` train step <= 1.3x Adam: ..."
"""

from __future__ import annotations

import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import learned_opt as lo

TRAIN_STEP_TARGET = 1.3  # issue 3: AdafacMLPLOpt's full train step <= 1.3x Adam's


def make_optimizer(name: str, num_steps: int) -> optax.GradientTransformation:
    """optax.adam / optax.sgd / optax.contrib.muon (lr 1e-3), a registered learned optimizer
    at its default init, or "pretrained:NAME" (a shipped optimizer as its card builds it, e.g.
    norm_mlp_mix with its Newton-Schulz orthogonalisation).

        tx = make_optimizer("adafac_mlp", num_steps=1000)
    """
    if name == "adam":
        return optax.adam(1e-3)
    if name == "sgd":
        return optax.sgd(1e-3)
    if name == "muon":  # Newton-Schulz-orthogonalised momentum on matrices, Adam on the rest
        return optax.contrib.muon(1e-3)
    if name.startswith("pretrained:"):  # shipped weights and options, at the card's rate
        return lo.load_pretrained(name.removeprefix("pretrained:"), num_steps=num_steps)
    lopt = lo.get_lopt(name)
    return lopt.optimizer(lopt.init(jax.random.key(0)), num_steps=num_steps)


def xla_cost(compiled) -> dict:
    """XLA's cost analysis of a compiled function as one dict (older JAX returned a list)."""
    cost = compiled.cost_analysis()
    return cost[0] if isinstance(cost, list) else cost


def _flops(compiled) -> float:
    return float(xla_cost(compiled).get("flops", 0.0))


# ----------------------------------------------------------------------------- models


def mlp_model(config, batch: int, key: jax.Array) -> dict:
    """The MLP classifier (~10.5M params at the default widths) on one random batch."""
    widths = tuple(config.train_widths)
    pairs = zip(widths[:-1], widths[1:], strict=True)
    params = [{"w": jax.random.normal(jax.random.fold_in(key, i), (a, b)) / np.sqrt(a),
               "b": jnp.zeros((b,))} for i, (a, b) in enumerate(pairs)]
    data = {"x": jax.random.normal(jax.random.fold_in(key, 100), (batch, widths[0])),
            "y": jax.random.randint(jax.random.fold_in(key, 101), (batch,), 0, widths[-1])}

    def loss_fn(params, data):
        h = data["x"]
        for layer in params[:-1]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
        logits = h @ params[-1]["w"] + params[-1]["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, data["y"]).mean()

    return {"model": "mlp", "batch": f"{batch}", "examples": batch,
            "params": params, "data": data, "loss_fn": loss_fn}


def transformer_model(config, key: jax.Array) -> dict:
    """The zoo's causal Transformer LM (`text_transformer`) sized by `config.transformer`, on
    one batch of its character corpus, through the task's public init / sample_batch / loss."""
    from models import registry  # experiments -> models is an allowed arrow

    overrides = config.transformer.to_dict()
    task = registry.get_task("text_transformer", **overrides)
    params = task.init(key)
    data = task.sample_batch(jax.random.fold_in(key, 1), "train")
    batch, seq_len = overrides["batch_size"], overrides["seq_len"]
    return {"model": "transformer", "batch": f"{batch}x{seq_len}", "examples": batch * seq_len,
            "params": params, "data": data, "loss_fn": task.loss}


def train_models(config) -> list:
    """Zero-argument builders of the models to step: the MLP at each of `train_batches`, then
    the Transformer LM if `train_transformer` (built lazily, so one ~10M model lives at a time)."""
    key = jax.random.key(config.seed)
    models = [functools.partial(mlp_model, config, int(b), key) for b in config.train_batches]
    if config.train_transformer:
        models.append(functools.partial(transformer_model, config, key))
    return models


# ----------------------------------------------------------------------------- timing


def bench_train_step(config, model: dict) -> list[dict]:
    """Forward + backward + update of `model` for every optimizer, round-robin timed.

    FLOPs (XLA cost analysis): forward + backward compiled alone; the update's as the step's
    minus those. When both run compute bound, the step's ratio to Adam approaches
    (fwd_bwd + update) / (fwd_bwd + adam_update).
    """
    params, data, loss_fn = model["params"], model["data"], model["loss_fn"]
    num_params = sum(p.size for p in jax.tree.leaves(params))
    grad_fn = jax.value_and_grad(loss_fn)
    fwd_bwd_flops = _flops(jax.jit(grad_fn).lower(params, data).compile())
    runs = {}
    for name in config.optimizers:
        tx = make_optimizer(name, config.num_steps)
        state = tx.init(params)

        def step(params, state, data, tx=tx):
            loss, grads = grad_fn(params, data)
            updates, state = tx.update(grads, state, params, value=loss)
            return optax.apply_updates(params, updates), state

        step = jax.jit(step, donate_argnums=(0, 1))
        carry = (jax.tree.map(jnp.copy, params), state)
        compiled = step.lower(*carry, data).compile()
        carry = compiled(*carry, data)
        jax.block_until_ready(carry)
        # The step's FLOPs minus forward + backward: the update and apply_updates (1 FLOP/param).
        runs[name] = {"step": compiled, "carry": carry, "times": [],
                      "update_flops": _flops(compiled) - fwd_bwd_flops}
    for _ in range(config.repeats):  # round-robin, as the update timings
        for run in runs.values():
            start = time.perf_counter()
            run["carry"] = run["step"](*run["carry"], data)
            jax.block_until_ready(run["carry"])
            run["times"].append(time.perf_counter() - start)
    adam = runs["adam"] if "adam" in runs else None
    adam_ms = float(np.median(adam["times"])) if adam else float("nan")
    adam_flops = fwd_bwd_flops + adam["update_flops"] if adam else float("nan")
    muon_ms = float(np.median(runs["muon"]["times"])) if "muon" in runs else None
    rows = []
    for name, run in runs.items():
        median = float(np.median(run["times"]))
        rows.append({
            "model": model["model"], "batch": model["batch"], "optimizer": name,
            "num_params": int(num_params), "step_ms": 1e3 * median,
            "ratio_to_adam": median / adam_ms,
            "ratio_to_muon": None if muon_ms is None else median / muon_ms,
            "fwd_bwd_gflop": fwd_bwd_flops / 1e9,
            "fwd_bwd_flops_per_param": fwd_bwd_flops / num_params,
            "update_gflop": run["update_flops"] / 1e9,
            # the ratio if the step ran at one FLOP rate throughout
            "flop_ratio_to_adam": (fwd_bwd_flops + run["update_flops"]) / adam_flops,
        })
        print(json.dumps(rows[-1]))
    del runs
    return rows


# ----------------------------------------------------------------------------- report


def target_summary(train_rows: list[dict], optimizer: str = "adafac_mlp",
                   target: float = TRAIN_STEP_TARGET) -> str:
    """Which model / batch meets the issue's train-step target (`optimizer` <= target x Adam).

        target_summary([{"optimizer": "adafac_mlp", "model": "mlp", "batch": "512",
                         "ratio_to_adam": 1.2}])
        # 'Target `adafac_mlp` train step <= 1.3x Adam: met on mlp 512 (1.20x); missed on none.'
    """
    rows = [r for r in train_rows if r["optimizer"] == optimizer]
    if not rows:
        return (f"Target `{optimizer}` train step <= {target}x Adam: not measured "
                f"(`{optimizer}` is not in config.optimizers).")
    met = [f"{r['model']} {r['batch']} ({r['ratio_to_adam']:.2f}x)" for r in rows
           if r["ratio_to_adam"] <= target]
    missed = [f"{r['model']} {r['batch']} ({r['ratio_to_adam']:.2f}x)" for r in rows
              if r["ratio_to_adam"] > target]
    return (f"Target `{optimizer}` train step <= {target}x Adam: met on "
            f"{', '.join(met) or 'none'}; missed on {', '.join(missed) or 'none'}.")


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_train_table(train_rows: list[dict]) -> list[str]:
    """report.md's train-step section: an explanation, the table and the target verdict."""
    lines = [
        "", "Full train step (forward + backward + update, params and state donated) of "
        "~10M-parameter models; `x Adam` is against Adam's step on the same model and batch "
        "in the same round-robin. `fwd+bwd GFLOP` is XLA's cost analysis of forward + "
        "backward alone (FLOP per parameter per step in brackets); `update GFLOP` the "
        "step's minus those (the update and apply_updates); `FLOP x Adam` = (fwd+bwd + update "
        "FLOPs) / (fwd+bwd + Adam's update FLOPs), the ratio if the whole step ran at one "
        "FLOP rate. `x Muon`: against optax.contrib.muon's step in the same round-robin "
        "(- when Muon was not measured). A batch `BxL` is B sequences of L tokens.", "",
        "| model | batch | params | fwd+bwd GFLOP (/param) | optimizer | update GFLOP | "
        "step ms | x Adam | x Muon | FLOP x Adam |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['num_params']:,} | "
              f"{r['fwd_bwd_gflop']:.1f} ({r['fwd_bwd_flops_per_param']:.0f}) | "
              f"{r['optimizer']} | {r['update_gflop']:.2f} | {r['step_ms']:.1f} | "
              f"{r['ratio_to_adam']:.2f} | {_ratio(r.get('ratio_to_muon'))} | "
              f"{r['flop_ratio_to_adam']:.2f} |"
              for r in train_rows]
    return lines + ["", target_summary(train_rows)]
