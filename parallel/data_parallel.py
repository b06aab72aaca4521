"""Synchronous data parallelism: one train step, three ways, all equal to the single-device step.

Every form computes, for a mean loss `loss_fn(params, batch)` and any optax transform `tx`
(learned optimizers included; the loss is passed as optax's `value=` extra argument):

    loss, grads = value_and_grad(loss_fn)(params, full_batch)
    updates, opt_state = tx.update(grads, opt_state, params, value=loss)
    params = optax.apply_updates(params, updates)

The batch is split over the mesh axis `data`; each shard's mean loss and gradient are averaged
(`pmean`), which equals the full-batch mean because every shard holds the same number of
examples. Since every replica then sees the same averaged gradient, the optimizer update is
identical on every replica and params stay replicated.

    step = make_train_step(loss_fn, tx)                        # single-device reference
    step = make_pmap_train_step(loss_fn, tx)                   # pmap + lax.pmean
    step = make_jit_train_step(loss_fn, tx, mesh)              # jit, batch sharded, XLA all-reduce
    step = make_shard_map_train_step(loss_fn, tx, mesh)        # shard_map + explicit pmean
    params, opt_state, loss = step(params, opt_state, batch)

`pmap` is kept because many users still call it; since JAX 0.8 it is implemented on
`jit` + `shard_map` and is in maintenance mode, so new code should use the other two forms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from parallel.mesh import DATA, axis_size

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]
TrainStep = Callable[[PyTree, PyTree, PyTree], tuple[PyTree, PyTree, jax.Array]]


def _with_extra_args(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    # Plain transforms reject `value=`; wrapping lets one step serve Adam and learned optimizers.
    return optax.with_extra_args_support(tx)


def _apply(tx, loss, grads, params, opt_state):
    updates, opt_state = tx.update(grads, opt_state, params, value=loss)
    return optax.apply_updates(params, updates), opt_state


def batch_size_of(batch: PyTree) -> int:
    """Leading dimension shared by every leaf of `batch` (ValueError when they disagree)."""
    sizes = {int(np.shape(leaf)[0]) for leaf in jax.tree.leaves(batch)}
    if len(sizes) != 1:
        raise ValueError(f"batch leaves disagree on the leading (batch) dimension: {sorted(sizes)}")
    return sizes.pop()


def check_divisible(batch: PyTree, num_shards: int, axis_name: str = DATA) -> int:
    """The per-shard batch size; ValueError naming both sizes when it is not whole."""
    size = batch_size_of(batch)
    if size % num_shards:
        raise ValueError(
            f"batch size {size} is not divisible by the {axis_name!r} axis size {num_shards}; "
            f"use a multiple of {num_shards}"
        )
    return size // num_shards


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation) -> TrainStep:
    """The single-device reference step on the full batch, jitted.

    Returns:
      `step(params, opt_state, batch) -> (params, opt_state, loss)`.
    """
    tx = _with_extra_args(tx)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        params, opt_state = _apply(tx, loss, grads, params, opt_state)
        return params, opt_state, loss

    return step


def loss_and_grads(loss_fn: LossFn) -> Callable:
    """`jit(value_and_grad(loss_fn))`: the reference loss and gradients on one device."""
    return jax.jit(jax.value_and_grad(loss_fn))


# ----------------------------------------------------------------------------------------------
# pmap + lax.pmean


def replicate(tree: PyTree, num_devices: int | None = None) -> PyTree:
    """Stack `num_devices` copies of every leaf on a new leading axis (the pmap layout)."""
    n = jax.local_device_count() if num_devices is None else num_devices
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), tree)


def unreplicate(tree: PyTree) -> PyTree:
    """The first replica of a pmap-layout pytree."""
    return jax.tree.map(lambda x: x[0], tree)


def shard_for_pmap(batch: PyTree, num_devices: int | None = None) -> PyTree:
    """Reshape every leaf from `[B, ...]` to `[num_devices, B // num_devices, ...]`."""
    n = jax.local_device_count() if num_devices is None else num_devices
    per_device = check_divisible(batch, n, "pmap devices")
    return jax.tree.map(lambda x: jnp.reshape(x, (n, per_device, *jnp.shape(x)[1:])), batch)


def make_pmap_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    axis_name: str = DATA,
    *,
    donate: bool = False,
) -> TrainStep:
    """Data-parallel step with `jax.pmap` and `lax.pmean` over `axis_name`.

    Params and optimizer state are replicated on a leading device axis (`replicate`), the batch
    is split with `shard_for_pmap`. The returned loss has one (identical) entry per device.

        step = make_pmap_train_step(loss_fn, optax.adam(1e-3))
        params_r, state_r = replicate(params), replicate(tx.init(params))
        params_r, state_r, loss_r = step(params_r, state_r, shard_for_pmap(batch))
    """
    tx = _with_extra_args(tx)

    def per_device(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        loss, grads = jax.lax.pmean((loss, grads), axis_name)
        params, opt_state = _apply(tx, loss, grads, params, opt_state)
        return params, opt_state, loss

    return jax.pmap(per_device, axis_name=axis_name, donate_argnums=(0, 1) if donate else ())


# ----------------------------------------------------------------------------------------------
# jit with shardings (XLA inserts the all-reduce), optionally FSDP-style sharded params/state


def batch_sharding(mesh: Mesh, axis_name: str = DATA) -> NamedSharding:
    """Leading (batch) dimension split over `axis_name`, the rest replicated."""
    axis_size(mesh, axis_name)
    return NamedSharding(mesh, PartitionSpec(axis_name))


def shard_batch(batch: PyTree, mesh: Mesh, axis_name: str = DATA) -> PyTree:
    """Place `batch` on `mesh`, split over `axis_name` (ValueError if not divisible)."""
    check_divisible(batch, axis_size(mesh, axis_name), axis_name)
    return jax.device_put(batch, batch_sharding(mesh, axis_name))


def fsdp_shardings(params: PyTree, mesh: Mesh, axis_name: str = DATA) -> PyTree:
    """ZeRO/FSDP-style shardings: each leaf split over `axis_name` along its largest divisible
    dimension (replicated when none divides). Use as `param_shardings` of `make_jit_train_step`.
    """
    n = axis_size(mesh, axis_name)

    def one(x):
        shape = np.shape(x)
        dims = sorted(range(len(shape)), key=lambda d: -shape[d])
        for d in dims:
            if shape[d] % n == 0 and shape[d] >= n:
                spec = [None] * len(shape)
                spec[d] = axis_name
                return NamedSharding(mesh, PartitionSpec(*spec))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, params)


def opt_state_shardings(
    tx: optax.GradientTransformation, params: PyTree, param_shardings: PyTree, mesh: Mesh
) -> PyTree:
    """Shardings for `tx.init(params)`: every copy of the params tree inside the state (Adam's
    moments, momentum, ...) is sharded like the params; everything else (step counts, factored
    statistics, ...) is replicated on `mesh`.

    A state leaf in such a copy that stacks K arrays shaped like its parameter ((K,) + shape,
    e.g. a learned optimizer's momenta at K decays) is sharded like the parameter along the
    parameter's axes; a leaf of any other shape is replicated."""
    state_shapes = jax.eval_shape(tx.init, params)
    replicated = NamedSharding(mesh, PartitionSpec())
    return optax.tree_map_params(
        tx,
        lambda leaf, sharding, param: _state_leaf_sharding(leaf, sharding, param, replicated),
        state_shapes,
        param_shardings,
        params,
        transform_non_params=lambda _: replicated,
    )


def _state_leaf_sharding(leaf, sharding, param, replicated: NamedSharding):
    """`sharding` (the parameter's) for a state leaf shaped like the parameter; for one with
    extra leading axes, the same spec on the parameter's (trailing) axes; else `replicated`."""
    shape, param_shape = tuple(np.shape(leaf)), tuple(np.shape(param))
    if shape == param_shape:
        return sharding
    extra = len(shape) - len(param_shape)
    if (extra > 0 and shape[extra:] == param_shape and isinstance(sharding, NamedSharding)):
        spec = tuple(sharding.spec) + (None,) * (len(param_shape) - len(sharding.spec))
        return NamedSharding(sharding.mesh, PartitionSpec(*((None,) * extra + spec)))
    return replicated


def init_opt_state(
    tx: optax.GradientTransformation, params: PyTree, mesh: Mesh | None = None
) -> PyTree:
    """`tx.init(params)` placed next to `params`: param-shaped state is sharded like `params`
    (replicated params give replicated state, FSDP-sharded params give sharded moments) and the
    rest is replicated over `mesh`. Without a mesh, plain `tx.init(params)`.

        params = jax.device_put(params, fsdp_shardings(params, mesh))
        opt_state = init_opt_state(tx, params, mesh)
    """
    if mesh is None:
        return tx.init(params)
    param_shardings = jax.tree.map(_sharding_or(NamedSharding(mesh, PartitionSpec())), params)
    out = opt_state_shardings(tx, params, param_shardings, mesh)
    return jax.jit(tx.init, out_shardings=out)(params)


def make_jit_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    *,
    axis_name: str = DATA,
    param_shardings: PyTree | None = None,
    donate: bool = False,
) -> TrainStep:
    """Data-parallel step as one `jax.jit` program: the batch is sharded over `axis_name`,
    params are replicated (or sharded by `param_shardings`, e.g. `fsdp_shardings`), and XLA's
    SPMD partitioner inserts the gradient all-reduce.

    Output params and optimizer state keep the shardings they came in with, so the step can be
    called in a loop without resharding:

        params = jax.device_put(params, replicated(mesh))
        opt_state = init_opt_state(tx, params, mesh)
        step = make_jit_train_step(loss_fn, tx, mesh)
        params, opt_state, loss = step(params, opt_state, shard_batch(batch, mesh))
    """
    tx = _with_extra_args(tx)
    data_size = axis_size(mesh, axis_name)
    replicated = NamedSharding(mesh, PartitionSpec())

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        params, opt_state = _apply(tx, loss, grads, params, opt_state)
        return params, opt_state, loss

    compiled: dict = {}

    def jitted_for(params, opt_state):
        p_shard = param_shardings or jax.tree.map(lambda _: replicated, params)
        s_shard = jax.tree.map(_sharding_or(replicated), opt_state)
        key = (jax.tree.structure(params), jax.tree.structure(opt_state),
               tuple(jax.tree.leaves(s_shard)))
        if key not in compiled:
            compiled[key] = jax.jit(
                step,
                in_shardings=(p_shard, s_shard, batch_sharding(mesh, axis_name)),
                out_shardings=(p_shard, s_shard, replicated),
                donate_argnums=(0, 1) if donate else (),
            )
        return compiled[key]

    def run(params, opt_state, batch):
        check_divisible(batch, data_size, axis_name)
        return jitted_for(params, opt_state)(params, opt_state, batch)

    # `run.lower(...)` gives the compiled program, e.g. for `parallel.communication`.
    run.lower = lambda params, opt_state, batch: jitted_for(params, opt_state).lower(
        params, opt_state, batch
    )
    return run


def _sharding_or(default: NamedSharding) -> Callable:
    def pick(x):
        sharding = getattr(x, "sharding", None)
        return sharding if isinstance(sharding, NamedSharding) else default

    return pick


# ----------------------------------------------------------------------------------------------
# explicit shard_map + pmean


def make_shard_map_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    *,
    axis_name: str = DATA,
    donate: bool = False,
) -> TrainStep:
    """Data-parallel step written per shard with `jax.shard_map`: each device computes its
    shard's loss and gradient, `lax.pmean` averages them over `axis_name`, and every device
    applies the same update to its replica of params and optimizer state.

        step = make_shard_map_train_step(loss_fn, tx, mesh)
        params, opt_state, loss = step(params, opt_state, shard_batch(batch, mesh))
    """
    tx = _with_extra_args(tx)
    data_size = axis_size(mesh, axis_name)

    def per_shard(params, opt_state, batch):
        # Params enter replicated (invariant over `axis_name`). Differentiating w.r.t. an
        # invariant value makes shard_map sum the per-shard gradients itself (the transpose of
        # the implicit invariant->varying cast is a psum), which a pmean on top would count
        # `axis_size` times. Casting to varying first keeps each shard's gradient local, so the
        # one pmean below is the only all-reduce and gives exactly the full-batch mean.
        local_params = jax.lax.pcast(params, axis_name, to="varying")
        loss, grads = jax.value_and_grad(loss_fn)(local_params, batch)
        loss, grads = jax.lax.pmean((loss, grads), axis_name)
        params, opt_state = _apply(tx, loss, grads, params, opt_state)
        return params, opt_state, loss

    sharded = jax.jit(
        jax.shard_map(
            per_shard,
            mesh=mesh,
            in_specs=(PartitionSpec(), PartitionSpec(), PartitionSpec(axis_name)),
            out_specs=(PartitionSpec(), PartitionSpec(), PartitionSpec()),
        ),
        donate_argnums=(0, 1) if donate else (),
    )

    def run(params, opt_state, batch):
        check_divisible(batch, data_size, axis_name)
        return sharded(params, opt_state, batch)

    run.lower = sharded.lower
    return run
