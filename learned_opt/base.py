"""`LearnedOptimizer`: the base every architecture derives from, and the registry of them.

An architecture object holds only the hyperparameters of its network; the meta-parameters
`theta` are a pytree of arrays, so `tx.update` is a pure function of arrays that can be jitted,
vmapped over `theta`, differentiated w.r.t. `theta` and sharded like the params:

    lopt = lo.MLPLOpt()
    theta = lopt.init(jax.random.key(0))
    tx = lopt.optimizer(theta, num_steps=1000)           # optax.GradientTransformationExtraArgs
    state = tx.init(params)
    updates, state = tx.update(grads, state, params, value=loss)

An architecture implements `init_theta`, `init_leaf`, `leaf_state` and `leaf_delta` (and, when
it has state that is not per parameter tensor, `init_global` / `global_step`). This base does
the rest, identically for every architecture:

* **Bounded updates**: every entry of every update is clipped to `[-max_update, max_update]`
  (constructor knob, default 0.1), so no single step can move a parameter further than that.
* **Parameter-scale-aware step size**: each tensor's update is multiplied by
  `max(rms(param), param_scale_floor) ** theta["param_scale_exponent"]`. The exponent is a
  meta-parameter initialised at 0 (scale-free, like Adam); meta-training can move it towards 1
  (LARS/LAMB-like steps relative to the parameter's size).
* **Weight decay** (optional input): `optimizer(theta, weight_decay=wd)` adds the decoupled
  term `-wd * nominal_step_size * param` (AdamW's convention) before clipping.
* **Non-finite gradients**: an entry whose gradient is NaN/Inf gets a zero update and its
  per-parameter state entries stay unchanged; state that is shared by a whole tensor (Adafactor
  rows/columns, per-tensor LSTMs: `per_tensor_fields`) is left unchanged for a tensor with any
  non-finite entry. The
  step counter still advances. So NaN/Inf never reaches params or state.
* **Dtypes**: params and grads may be float32, bfloat16 or float16; all arithmetic runs in
  float32, state is float32 (an EMA with decay 0.999 stalls in bfloat16), updates come back in
  each param's dtype.
* **Input checks**: a `theta` from another architecture, a params tree that does not match the
  state, a missing `num_steps` or `value` each raise a ValueError naming the problem.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from learned_opt import features as F

PyTree = Any
Theta = dict[str, Any]


class LOptState(NamedTuple):
    """State of every learned optimizer.

    count: int32 number of updates taken so far.
    per_leaf: the architecture's leaf-state NamedTuple whose every field is a pytree with the
      params' structure (one array per parameter tensor).
    glob: architecture state that is not per tensor (e.g. loss EMAs); a NamedTuple of arrays.
    """

    count: jax.Array
    per_leaf: Any
    glob: Any


class EmptyState(NamedTuple):
    """No global state."""


class StepContext(NamedTuple):
    """What `leaf_step` sees besides its own leaf: the step counter and per-step features."""

    count: jax.Array            # int32, number of this update (1 for the first)
    global_features: jax.Array  # (G,) float32 time / progress features, shared by all tensors
    extra: Any                  # architecture-specific (e.g. loss features), from global_step
    grad: F.GradStats | None = None  # this leaf's gradient statistics (set per leaf by the base)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LearnedOptimizer(abc.ABC):
    """Base of all learned optimizers (see module docstring for the shared behaviour).

    Attributes:
      max_update: bound on the magnitude of every update entry.
      param_scale_floor: smallest parameter RMS used by the parameter-scale-aware step size.
    """

    max_update: float = 0.1
    param_scale_floor: float = 1e-3

    name: ClassVar[str] = ""               # set by @register
    needs_value: ClassVar[bool] = False     # update needs value= (the loss)
    needs_num_steps: ClassVar[bool] = False  # optimizer() needs num_steps
    # Leaf-state fields shared by a whole tensor (not one value per entry): a tensor with any
    # non-finite gradient entry leaves them unchanged.
    per_tensor_fields: ClassVar[tuple[str, ...]] = ()
    # Per-entry fields that `leaf_state` itself masks with `ctx.grad.finite` and materializes
    # (`F.keep_finite`), because it reads them back within the step; the base leaves them as is.
    premasked_fields: ClassVar[tuple[str, ...]] = ()

    # ---- what an architecture implements -------------------------------------------------

    @abc.abstractmethod
    def init_theta(self, key: jax.Array) -> Theta:
        """Architecture meta-parameters (without the shared `param_scale_exponent`)."""

    @abc.abstractmethod
    def init_leaf(self, p: jax.Array) -> NamedTuple:
        """Per-tensor state for parameter `p` (a NamedTuple of float32 arrays)."""

    @abc.abstractmethod
    def leaf_state(self, theta: Theta, g: jax.Array, p: jax.Array, leaf: NamedTuple,
                   ctx: StepContext) -> tuple[NamedTuple, Any]:
        """The new leaf state and `aux`: per-tensor values `leaf_delta` needs (or None).

        `g` and `p` are float32; non-finite entries of `g` have been replaced by zero.
        """

    @abc.abstractmethod
    def leaf_delta(self, theta: Theta, g: jax.Array, p: jax.Array, new_leaf: NamedTuple,
                   aux: Any, ctx: StepContext) -> jax.Array:
        """The update to add to `p` (float32, unclipped), from the state `leaf_state` returned.

        The per-entry fields of `new_leaf` (those shaped like `p`, or `(K,) + p.shape`) are read
        back from memory after they were written (see `_safe_leaf_step`); at entries whose
        gradient is non-finite they hold the old state (the update there is zeroed anyway).
        """

    def leaf_step(self, theta: Theta, g: jax.Array, p: jax.Array, leaf: NamedTuple,
                  ctx: StepContext) -> tuple[jax.Array, NamedTuple]:
        """(update, new leaf state) of one tensor, unclipped and unmasked: `leaf_state` then
        `leaf_delta`. `tx.update` goes through `_safe_leaf_step` instead."""
        new_leaf, aux = self.leaf_state(theta, g, p, leaf, ctx)
        return self.leaf_delta(theta, g, p, new_leaf, aux, ctx), new_leaf

    @abc.abstractmethod
    def nominal_step_size(self, theta: Theta) -> jax.Array:
        """A scalar step size that weight decay is scaled by (Adam's learning rate analogue)."""

    def init_global(self) -> NamedTuple:
        """State that is not per tensor. Default: none."""
        return EmptyState()

    def global_step(self, theta: Theta, glob: NamedTuple, value: jax.Array | None,
                    count: jax.Array) -> tuple[Any, NamedTuple]:
        """(extra context for leaf_step, new global state). Default: nothing."""
        del theta, value, count
        return None, glob

    # ---- public API ---------------------------------------------------------------------

    def init(self, key: jax.Array) -> Theta:
        """Meta-parameters `theta` (a dict of float32 arrays); the documented default optimizer."""
        theta = dict(self.init_theta(key))
        theta["param_scale_exponent"] = jnp.zeros((), jnp.float32)
        return theta

    def config(self) -> dict[str, Any]:
        """JSON-able hyperparameters: `get_lopt(**config)` rebuilds this architecture."""
        out = {"name": self.name}
        for field in dataclasses.fields(self):
            if field.init:
                value = getattr(self, field.name)
                out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    def check_theta(self, theta: Theta) -> None:
        """Raise a ValueError unless `theta` has this architecture's structure and shapes."""
        expected = jax.eval_shape(self.init, jax.random.key(0))
        got_def, exp_def = jax.tree.structure(theta), jax.tree.structure(expected)
        if got_def != exp_def:
            raise ValueError(
                f"theta does not belong to {self!r}: {_describe_theta(theta)}; expected keys "
                f"{sorted(expected)}. Create theta with this optimizer's init(key).")
        for path, got, want in zip(jax.tree_util.tree_flatten_with_path(theta)[0],
                                   jax.tree.leaves(theta), jax.tree.leaves(expected), strict=True):
            shape = jnp.shape(got)
            if shape != want.shape:
                raise ValueError(
                    f"theta{jax.tree_util.keystr(path[0])} has shape {shape} but {self!r} expects "
                    f"{want.shape}: theta comes from an architecture with other hyperparameters "
                    f"({_describe_theta(theta)}).")

    def optimizer(self, theta: Theta, num_steps: int | None = None, *,
                  weight_decay: float = 0.0) -> optax.GradientTransformationExtraArgs:
        """This learned optimizer with meta-parameters `theta`, as an optax transformation.

        Args:
          theta: meta-parameters from `init` (or meta-training / `load_pretrained`).
          num_steps: the training horizon, for progress features (required when
            `needs_num_steps`).
          weight_decay: decoupled weight decay (scaled by `nominal_step_size`).

        Returns:
          `GradientTransformationExtraArgs` whose `update(grads, state, params, *, value=None,
          **extra_args)` needs `params`; `value` (the loss) is required when `needs_value`;
          other extra args are ignored, so it works inside `optax.chain` / `MultiSteps`.
        """
        self.check_theta(theta)
        if num_steps is None and self.needs_num_steps:
            raise ValueError(f"{self.name} needs num_steps (the training horizon) for its progress "
                             f"features: call optimizer(theta, num_steps=N)")
        if num_steps is not None and (not isinstance(num_steps, int) or num_steps <= 0):
            raise ValueError(f"num_steps must be a positive int or None, got {num_steps!r}")

        def init_fn(params: PyTree) -> LOptState:
            leaves, treedef = jax.tree.flatten(params)
            per_leaf = _transpose_leaf_states([self.init_leaf(p) for p in leaves], treedef,
                                              self._leaf_state_type())
            return LOptState(jnp.zeros((), jnp.int32), per_leaf, self.init_global())

        def update_fn(updates: PyTree, state: LOptState, params: PyTree | None = None, *,
                      value: jax.Array | None = None, **extra_args) -> tuple[PyTree, LOptState]:
            del extra_args  # optax convention: ignore what we do not use
            if params is None:
                raise ValueError(f"{self.name} needs params: call tx.update(grads, state, params)")
            if value is None and self.needs_value:
                raise ValueError(f"{self.name} uses loss features: pass the loss as "
                                 f"tx.update(grads, state, params, value=loss)")
            grads, treedef = jax.tree.flatten(updates)
            param_leaves = _check_structures(self.name, treedef, params, state)
            count = optax.safe_increment(state.count)
            extra, glob = self.global_step(theta, state.glob, value, count)
            ctx = StepContext(count, jnp.concatenate([
                F.time_features(count), F.progress_features(count, num_steps)]), extra)
            leaf_states = _untranspose_leaf_states(state.per_leaf, len(grads))
            new_updates, new_leaf_states = [], []
            for g, p, leaf in zip(grads, param_leaves, leaf_states, strict=True):
                if jnp.shape(g) != jnp.shape(p):
                    raise ValueError(f"{self.name}: a gradient has shape {jnp.shape(g)} but its "
                                     f"parameter has shape {jnp.shape(p)}")
                _check_leaf_state_shapes(self, p, leaf)
                u, new_leaf = self._safe_leaf_step(theta, g, p, leaf, ctx, weight_decay)
                new_updates.append(u)
                new_leaf_states.append(new_leaf)
            per_leaf = _transpose_leaf_states(new_leaf_states, treedef, type(state.per_leaf))
            return treedef.unflatten(new_updates), LOptState(count, per_leaf, glob)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)

    # ---- shared machinery ---------------------------------------------------------------

    def _leaf_state_type(self) -> type:
        return type(self.init_leaf(jnp.zeros((1,), jnp.float32)))

    def _safe_leaf_step(self, theta, g_raw, p_raw, leaf, ctx, weight_decay):
        """leaf_state / leaf_delta plus the shared policies: finite mask, scale, weight decay,
        clip, cast.

        Written for memory traffic, which bounds every architecture's update on CPU:
          * the per-entry state is computed, masked (non-finite gradient: entry unchanged) and
            written in one pass, then an optimization barrier makes `leaf_delta` read it back
            instead of recomputing it from the old state. Without the barrier XLA fuses the
            state update into both the state's and the update's loops, the old state stays
            live after the new one is written, and XLA copies every state buffer (measured:
            3 extra passes per state field, LearnedAdam 2x Adam);
          * the all-finite flag (needed only for per-tensor fields) and the parameter RMS (only
            when `param_scale_exponent` is not a trace-time zero) are reductions that XLA
            drops when unused;
          * `g`, `p` are converted to float32 inside the fusions, never materialized.
        """
        if g_raw.size == 0:
            return jnp.zeros_like(p_raw), leaf
        finite = jnp.isfinite(g_raw)
        g = jnp.where(finite, F.as_f32(g_raw), 0.0)
        p = F.as_f32(p_raw)
        stats = F.grad_stats(g_raw)
        ctx = ctx._replace(grad=stats)
        new_leaf, aux = self.leaf_state(theta, g, p, leaf, ctx)
        entry_fields = [i for i, old in enumerate(leaf)
                        if leaf._fields[i] not in self.per_tensor_fields
                        and old.ndim in (g.ndim, g.ndim + 1)
                        and old.shape[old.ndim - g.ndim:] == g.shape]
        kept = list(new_leaf)
        if len(entry_fields) < len(kept):
            all_finite = stats.all_finite
            for i, (old, new) in enumerate(zip(leaf, new_leaf, strict=True)):
                if i not in entry_fields:
                    kept[i] = jnp.where(all_finite, new, old)
        entry_fields = [i for i in entry_fields if leaf._fields[i] not in self.premasked_fields]
        for i in entry_fields:
            kept[i] = F.keep_finite(finite, new_leaf[i], leaf[i], materialize=False)
        # The raw gradient goes through the barrier too, and `leaf_delta` masks its own copy:
        # one masked gradient shared by the state's and the update's loops is written out by
        # XLA and read back by each (measured: MLPLOpt 16 B/param more traffic); masked again
        # behind the barrier, each loop recomputes it from `g_raw` instead.
        written, g_raw = jax.lax.optimization_barrier(
            (tuple(kept[i] for i in entry_fields), g_raw))
        finite = jnp.isfinite(g_raw)
        g = jnp.where(finite, F.as_f32(g_raw), 0.0)
        for_delta = list(new_leaf)  # per-tensor fields: the new values, as before the mask
        for i, value in zip(entry_fields, written, strict=True):
            for_delta[i] = kept[i] = value
        delta = self.leaf_delta(theta, g, p, type(leaf)(*for_delta), aux, ctx)
        exponent = theta["param_scale_exponent"]
        if not _is_zero(exponent):
            delta = delta * jnp.power(F.tensor_rms(p, self.param_scale_floor), exponent)
        if weight_decay:
            delta = delta - weight_decay * self.nominal_step_size(theta) * p
        delta = jnp.clip(delta, -self.max_update, self.max_update)
        update = jnp.where(finite, delta, 0.0).astype(p_raw.dtype)
        return update, type(leaf)(*kept)


def _is_zero(x) -> bool:
    """Whether `x` is a concrete (not traced) zero, so a policy scaled by it can be skipped."""
    try:
        return bool(np.all(np.asarray(x) == 0))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False


def _transpose_leaf_states(leaf_states: list, treedef, state_type: type):
    """[LeafState per tensor] -> LeafState of trees (each with the params' structure)."""
    num_fields = len(state_type._fields)
    return state_type(*[treedef.unflatten([s[i] for s in leaf_states])
                        for i in range(num_fields)])


def _untranspose_leaf_states(per_leaf, num_leaves: int) -> list:
    fields = [jax.tree.leaves(tree) for tree in per_leaf]
    return [type(per_leaf)(*[f[i] for f in fields]) for i in range(num_leaves)]


def _check_structures(name: str, treedef, params: PyTree, state: LOptState) -> list:
    """Params leaves, after checking grads, params and state describe the same tree."""
    if not isinstance(state, LOptState):
        raise ValueError(f"{name}: state is a {type(state).__name__}, not the LOptState that "
                         f"tx.init(params) returns")
    param_leaves, param_def = jax.tree.flatten(params)
    if param_def != treedef:
        raise ValueError(f"{name}: grads and params have different tree structures:\n"
                         f"  grads:  {treedef}\n  params: {param_def}")
    for field, tree in zip(state.per_leaf._fields, state.per_leaf, strict=True):
        state_def = jax.tree.structure(tree)
        if state_def != treedef:
            raise ValueError(
                f"{name}: params do not match the optimizer state (state.{field} was built by "
                f"tx.init for another params tree):\n  params: {treedef}\n  state:  {state_def}")
    return param_leaves


def _check_leaf_state_shapes(lopt: LearnedOptimizer, p: jax.Array, leaf: NamedTuple) -> None:
    expected = jax.eval_shape(lopt.init_leaf, jax.ShapeDtypeStruct(jnp.shape(p), jnp.float32))
    for field, got, want in zip(leaf._fields, leaf, expected, strict=True):
        if jnp.shape(got) != want.shape:
            raise ValueError(
                f"{lopt.name}: params do not match the optimizer state: a parameter of shape "
                f"{jnp.shape(p)} needs state.{field} of shape {want.shape}, the state has "
                f"{jnp.shape(got)} (was tx.init called with other params?)")


def _describe_theta(theta: Any) -> str:
    """Which registered architecture (default hyperparameters) a theta looks like."""
    try:
        keys = sorted(theta) if isinstance(theta, dict) else None
    except TypeError:
        keys = None
    if keys is None:
        return f"theta is a {type(theta).__name__}, not a dict of arrays"
    got_def = jax.tree.structure(theta)
    for name, cls in _REGISTRY.items():
        ref = jax.eval_shape(cls().init, jax.random.key(0))
        if jax.tree.structure(ref) == got_def:
            return f"theta has the structure of {cls.__name__} (registered as {name!r})"
    return f"theta has keys {keys}, which match no registered architecture"


# ---- registry -------------------------------------------------------------------------------

_REGISTRY: dict[str, type[LearnedOptimizer]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: register an architecture under `name` and set its `name` attribute."""

    def wrap(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"learned optimizer {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def get_lopt(name: str, **kwargs) -> LearnedOptimizer:
    """The architecture registered as `name`, built with hyperparameters `kwargs`.

    `get_lopt(**lopt.config())` rebuilds `lopt` (the `name` key is accepted).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown learned optimizer {name!r}; valid names: {list_lopts()}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as e:
        fields = [f.name for f in dataclasses.fields(_REGISTRY[name]) if f.init]
        raise TypeError(f"bad hyperparameters for {name!r}: {e}; valid: {fields}") from None


def list_lopts() -> list[str]:
    """Names accepted by `get_lopt`."""
    return sorted(_REGISTRY)
