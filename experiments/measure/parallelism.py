"""Data, tensor, asynchronous and pipeline parallelism: equivalence, step time, communication.

    python -m experiments.parallelism --config experiments/configs/parallelism.py \
        --workdir workdirs/parallelism_dp --config.mode=dp     # or tp | async | pp

- dp: every data-parallel form of `parallel.data_parallel` (pmap, jit, shard_map, FSDP-sharded
  jit) on a task of the zoo, with Adam and a learned optimizer: max deviation from the
  single-device full-batch step after several steps, median step time, bytes communicated per
  step (parsed from the compiled HLO).
- tp: the pure-function LM of `models.functional_lm`, made tensor-parallel by
  `parallel.tensor_parallel`, on data x model meshes, both forms
  (shard_map with psum, sharding annotations): loss / gradient / params deviation from the
  unsharded model, step time, communication.
- async: see `experiments.measure.async_sgd` (sync vs async SGD vs sync with a straggler).
- pp: `experiments.measure.pipeline.run` (pipeline parallelism, owned by its own module).

Writes results.json and report.md (and plots for async) into the workdir through the tracker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.measure.outputs import write_outputs
from experiments.measure.tables import records_table
from experiments.measure.timing import median_seconds

MODES = ("dp", "tp", "async", "pp")



# ----------------------------------------------------------------------------- helpers


def max_abs_diff(a, b) -> float:
    diffs = jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(jnp.asarray(x) - jnp.asarray(y)))),
                         a, b)
    return max(jax.tree.leaves(diffs), default=0.0)


def make_optimizer(name: str, learning_rate: float, seed: int) -> optax.GradientTransformation:
    import learned_opt as lo

    if name == "adam":
        return optax.adam(learning_rate)
    if name == "sgd":
        return optax.sgd(learning_rate)
    if name.endswith("_lopt"):
        lopt = lo.get_lopt(name.removesuffix("_lopt"))
        return lopt.optimizer(lopt.init(jax.random.key(seed)))
    raise ValueError(f"unknown optimizer {name!r}; use 'adam', 'sgd' or '<lopt name>_lopt' "
                     f"with a name from learned_opt.list_lopts()")


# ----------------------------------------------------------------------------- dp


def run_dp(config, tracker) -> dict[str, Any]:
    import models
    from parallel import communication
    from parallel import data_parallel as dp
    from parallel import mesh as mesh_lib

    c = config.dp
    task = models.get_task(c.task, batch_size=c.batch_size)
    params = task.init(jax.random.key(config.seed))
    keys = jax.random.split(jax.random.key(config.seed + 1), c.num_steps)
    batches = [task.sample_batch(k, "train") for k in keys]
    mesh = mesh_lib.make_mesh({"data": -1})
    rows = []
    for opt_name in c.optimizers:
        tx = make_optimizer(opt_name, c.learning_rate, config.seed)
        ref_step = dp.make_train_step(task.loss, tx)
        ref_params, ref_state, ref_losses = params, tx.init(params), []
        for batch in batches:
            ref_params, ref_state, loss = ref_step(ref_params, ref_state, batch)
            ref_losses.append(float(loss))
        ref_time = median_seconds(ref_step, params, tx.init(params), batches[0],
                                  repeats=config.timing_repeats)
        rows.append({"optimizer": opt_name, "form": "single_device", "devices": 1,
                     "param_change": max_abs_diff(ref_params, params),
                     "max_param_diff": 0.0, "max_loss_diff": 0.0, "step_ms": 1e3 * ref_time,
                     "time_ratio": 1.0, "comm_bytes": 0, "comm_ops": 0})
        forms = {
            "pmap": (dp.make_pmap_train_step(task.loss, tx), dp.replicate, dp.shard_for_pmap),
            "jit": (dp.make_jit_train_step(task.loss, tx, mesh),
                    lambda t: jax.device_put(t, mesh_lib.replicated(mesh)),
                    lambda b: dp.shard_batch(b, mesh)),
            "shard_map": (dp.make_shard_map_train_step(task.loss, tx, mesh),
                          lambda t: jax.device_put(t, mesh_lib.replicated(mesh)),
                          lambda b: dp.shard_batch(b, mesh)),
            "jit_fsdp": (dp.make_jit_train_step(task.loss, tx, mesh,
                                                param_shardings=dp.fsdp_shardings(params, mesh)),
                         lambda t: jax.device_put(t, dp.fsdp_shardings(t, mesh)),
                         lambda b: dp.shard_batch(b, mesh)),
        }
        for form, (step, place, split) in forms.items():
            p = place(params)
            s = dp.replicate(tx.init(params)) if form == "pmap" else dp.init_opt_state(tx, p, mesh)
            first = (p, s)
            losses = []
            for batch in batches:
                p, s, loss = step(p, s, split(batch))
                losses.append(float(np.asarray(loss).reshape(-1)[0]))
            final = dp.unreplicate(p) if form == "pmap" else p
            comm = communication.communication_of(step, *first, split(batches[0]))
            # Time the steady state: inputs laid out as the step's own outputs are.
            seconds = median_seconds(step, p, s, split(batches[0]), repeats=config.timing_repeats)
            rows.append({
                "optimizer": opt_name, "form": form, "devices": len(jax.devices()),
                "max_param_diff": max_abs_diff(final, ref_params),
                "max_loss_diff": float(np.max(np.abs(np.subtract(losses, ref_losses)))),
                "step_ms": 1e3 * seconds, "time_ratio": seconds / ref_time,
                "comm_bytes": comm.total_bytes, "comm_ops": comm.total_count,
            })
            tracker.log_metrics(len(rows), {f"dp/{k}": v for k, v in rows[-1].items()
                                            if not isinstance(v, str)})
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    return {"task": c.task, "batch_size": c.batch_size, "num_steps": c.num_steps,
            "param_bytes": int(param_bytes), "rows": rows}


# ----------------------------------------------------------------------------- tp


def _single_device_reference(loss_fn, tx, params, batch, num_steps, timing_repeats, form):
    """Loss, grads, params after `num_steps` and step time on one device, plus its table row."""
    from parallel import data_parallel as dp

    ref_loss, ref_grads = jax.jit(jax.value_and_grad(loss_fn))(params, batch)
    ref_step, ref_params, ref_state = dp.make_train_step(loss_fn, tx), params, tx.init(params)
    for _ in range(num_steps):
        ref_params, ref_state, _ = ref_step(ref_params, ref_state, batch)
    ref_time = median_seconds(ref_step, params, tx.init(params), batch, repeats=timing_repeats)
    row = {"form": form, "mesh": "1", "loss_diff": 0.0, "max_grad_diff": 0.0,
           "max_param_diff": 0.0, "step_ms": 1e3 * ref_time, "time_ratio": 1.0,
           "comm_bytes": 0, "comm_ops": 0}
    return ref_loss, ref_grads, ref_params, ref_time, [row]


def run_tp(config, tracker) -> dict[str, Any]:
    from models import functional_lm
    from parallel import mesh as mesh_lib
    from parallel import tensor_parallel as tp

    c = config.tp
    lm = functional_lm.LMConfig(vocab=c.vocab, dim=c.dim, num_heads=c.num_heads,
                                head_dim=c.head_dim, hidden=c.hidden, num_layers=c.num_layers,
                                max_len=c.seq_len)
    params = functional_lm.init_lm(jax.random.key(config.seed), lm)
    batch = {"tokens": jax.random.randint(jax.random.key(config.seed + 1),
                                          (c.batch_size, c.seq_len + 1), 0, c.vocab)}
    tx = optax.adam(c.learning_rate)
    ref_loss, ref_grads, ref_params, ref_time, rows = _single_device_reference(
        functional_lm.lm_loss, tx, params, batch, c.num_steps, config.timing_repeats,
        "single_device")
    for data, model in c.meshes:
        mesh = mesh_lib.make_mesh({"data": data, "model": model})
        for form, loss_fn in (("shard_map", tp.shard_map_lm_loss(functional_lm.lm_loss, mesh)),
                              ("annotations", tp.annotated_lm_loss(functional_lm.lm_loss, mesh))):
            placed, state, step = tp.make_tp_train_step(loss_fn, tx, mesh, params)
            loss, grads = jax.jit(jax.value_and_grad(loss_fn))(placed, batch)
            rows.append({"form": form, "mesh": f"data={data} x model={model}", **_tp_row(
                step, placed, state, batch, (loss, grads), (ref_loss, ref_grads, ref_params,
                                                            ref_time), config)})
            tracker.log_metrics(len(rows), {f"tp/{k}": v for k, v in rows[-1].items()
                                            if not isinstance(v, str)})
    rows += run_zoo_transformer(config, tracker, start=len(rows))
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    return {"model": lm._asdict(), "batch_size": c.batch_size, "num_steps": c.num_steps,
            "param_bytes": int(param_bytes), "zoo_task": dict(c.zoo_task), "rows": rows}


def _tp_row(step, params, state, batch, loss_and_grads, reference, config) -> dict:
    """Deviation from the single-device `reference` (loss, grads, params after the same
    steps, step seconds), step time and communication of one sharded `step`."""
    from parallel import communication

    (loss, grads), (ref_loss, ref_grads, ref_params, ref_time) = loss_and_grads, reference
    p, s = params, state
    for _ in range(config.tp.num_steps):
        p, s, _ = step(p, s, batch)
    comm = communication.communication_of(step, params, state, batch)
    seconds = median_seconds(step, p, s, batch, repeats=config.timing_repeats)
    return {"loss_diff": abs(float(loss) - float(ref_loss)),
            "max_grad_diff": max_abs_diff(grads, ref_grads),
            "max_param_diff": max_abs_diff(p, ref_params),
            "step_ms": 1e3 * seconds, "time_ratio": seconds / ref_time,
            "comm_bytes": comm.total_bytes, "comm_ops": comm.total_count}


def run_zoo_transformer(config, tracker, start: int) -> list[dict]:
    """The task zoo's flax Transformer, unchanged, on each mesh by path-rule annotations.

    SGD, because the attention key bias has a mathematically zero gradient that Adam would
    normalize into rounding noise of size lr (see tests/parallel/test_tensor_parallel.py)."""
    import models
    from parallel import data_parallel as dp
    from parallel import mesh as mesh_lib
    from parallel import tensor_parallel as tp

    c = config.tp
    task = models.get_task("text_transformer", **c.zoo_task)
    params = task.init(jax.random.key(config.seed))
    batch = task.sample_batch(jax.random.key(config.seed + 1), "train")
    tx = optax.sgd(c.zoo_learning_rate)
    ref_loss, ref_grads, ref_params, ref_time, rows = _single_device_reference(
        task.loss, tx, params, batch, c.num_steps, config.timing_repeats, "zoo_single_device")
    for data, model in c.meshes:
        mesh = mesh_lib.make_mesh({"data": data, "model": model})
        shardings = tp.shardings_from_rules(params, mesh)
        placed = jax.device_put(params, shardings)
        state = dp.init_opt_state(tx, placed, mesh)
        step = dp.make_jit_train_step(task.loss, tx, mesh, param_shardings=shardings)
        loss, grads = jax.jit(jax.value_and_grad(task.loss))(placed, dp.shard_batch(batch, mesh))
        rows.append({"form": "zoo_annotations", "mesh": f"data={data} x model={model}",
                     **_tp_row(step, placed, state, batch, (loss, grads),
                               (ref_loss, ref_grads, ref_params, ref_time), config)})
        tracker.log_metrics(start + len(rows), {f"tp/{k}": v for k, v in rows[-1].items()
                                                if not isinstance(v, str)})
    return rows


# ----------------------------------------------------------------------------- report


DP_COLUMNS = ["optimizer", "form", "devices", "param_change", "max_loss_diff", "max_param_diff",
              "step_ms", "time_ratio", "comm_bytes", "comm_ops"]
TP_COLUMNS = ["form", "mesh", "loss_diff", "max_grad_diff", "max_param_diff", "step_ms",
              "time_ratio", "comm_bytes", "comm_ops"]


def format_report(mode: str, results: dict) -> str:
    device = results["device"]
    lines = [f"# Parallelism: mode {mode}", "",
             f"Devices: {device['count']} x {device['kind']} ({device['platform']}). Step times "
             "are medians after the compiling step; ratios are to the single-device step of the "
             "same run. Communication: operand bytes per device per step of every collective "
             "in the compiled program.", ""]
    if mode == "dp":
        lines += [f"Task {results['task']}, batch {results['batch_size']}, "
                  f"{results['num_steps']} steps compared; params {results['param_bytes']} "
                  "bytes.", "", records_table(results["rows"], DP_COLUMNS, fmt=_cell)]
    elif mode == "tp":
        lines += [f"LM {results['model']}, batch {results['batch_size']}, "
                  f"{results['num_steps']} Adam steps compared; params {results['param_bytes']} "
                  f"bytes. Rows `zoo_*`: models' text_transformer {results['zoo_task']} with "
                  "Megatron path-rule shardings, SGD steps.", "",
                  records_table(results["rows"], TP_COLUMNS, fmt=_cell)]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run(config, workdir: str | Path) -> dict[str, Any]:
    """Run `config.mode`; write results.json and report.md into `workdir`; return results."""
    from experiments import tracking

    if config.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {config.mode!r}")
    workdir = Path(workdir)
    if config.mode == "pp":
        from experiments.configs import pipeline_bench as pipeline_config
        from experiments.measure import pipeline

        pp_config = pipeline_config.get_config()
        pp_config.update(config.pp)
        return pipeline.run(pp_config, str(workdir))
    tracker = tracking.start_run(workdir, config=config, backends=tuple(config.backends))
    if config.mode == "async":
        from experiments.measure import async_sgd

        results, report, figures = async_sgd.run(config, workdir, tracker)
    else:
        results = (run_dp if config.mode == "dp" else run_tp)(config, tracker)
        report, figures = format_report(config.mode, {**results, "device": device_info()}), []
    results["device"] = device_info()
    write_outputs(workdir, results, report, tracker=tracker, figures=figures)
    return results


def device_info() -> dict[str, Any]:
    devices = jax.devices()
    return {"count": len(devices), "kind": devices[0].device_kind,
            "platform": devices[0].platform}
