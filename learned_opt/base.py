"""`LearnedOptimizer`: the base every architecture derives from, and its per-tensor plumbing.

An architecture object holds only the hyperparameters of its network; the meta-parameters
`theta` are a pytree of arrays, so `tx.update` is a pure function of arrays that can be jitted,
vmapped over `theta`, differentiated w.r.t. `theta` and sharded like the params:

    lopt = lo.MLPLOpt()
    theta = lopt.init(jax.random.key(0))
    tx = lopt.optimizer(theta, num_steps=1000)           # optax.GradientTransformationExtraArgs
    tx = lopt.optimizer(theta, learning_rate=3e-3)       # or an optax schedule
    state = tx.init(params)
    updates, state = tx.update(grads, state, params, value=loss)

An architecture implements `init_theta`, `init_leaf`, `leaf_state` and `leaf_delta` (and, when
it has state that is not per parameter tensor, `init_global` / `global_step`). This base does
the rest, identically for every architecture: the plumbing from a params tree to one call per
tensor, the shared numeric policy around each call (bounded updates, parameter-scale-aware
step size, weight decay, non-finite gradients, dtypes: see `learned_opt.policy`), and input
checks (a `theta` from another architecture, a params tree that does not match the state, a
missing `num_steps` or `value` each raise a ValueError naming the problem: see
`learned_opt.checks`). Architectures register with `learned_opt.registry.register`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from learned_opt import checks, policy
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
    """What `leaf_state` / `leaf_delta` see besides their own leaf: the step counter, per-step
    features and the leaf's gradient statistics."""

    count: jax.Array            # int32, number of this update (1 for the first)
    global_features: jax.Array  # (G,) float32 time / progress features, shared by all tensors
    extra: Any                  # architecture-specific (e.g. loss features), from global_step
    # This leaf's gradient statistics: filled in per leaf by `policy.safe_leaf_step`, so always
    # set when an architecture sees the context.
    grad: F.GradStats | None = None
    # learning_rate / nominal_step_size at this step (a scalar), or None when the optimizer
    # runs at its nominal step size (`optimizer(theta)` without `learning_rate`).
    lr_scale: jax.Array | None = None


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
    # Whether the shared parameter-scale-aware step size (`theta["param_scale_exponent"]`)
    # applies; False for architectures whose update magnitude is exactly the learning rate.
    uses_param_scale: ClassVar[bool] = True
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
        back from memory after they were written (see `policy.safe_leaf_step`); at entries whose
        gradient is non-finite they hold the old state (the update there is zeroed anyway).
        """

    @abc.abstractmethod
    def nominal_step_size(self, theta: Theta) -> jax.Array:
        """A scalar step size that weight decay is scaled by (Adam's learning rate analogue)."""

    def init_global(self) -> NamedTuple:
        """State that is not per tensor. Default: none."""
        return EmptyState()

    def global_step(self, theta: Theta, glob: NamedTuple, value: jax.Array | None,
                    count: jax.Array) -> tuple[Any, NamedTuple]:
        """(`ctx.extra` for the leaf calls, new global state). Default: nothing."""
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
        checks.check_theta(self, theta)

    def optimizer(self, theta: Theta, num_steps: int | None = None, *,
                  learning_rate: policy.LearningRate | None = None,
                  weight_decay: float = 0.0) -> optax.GradientTransformationExtraArgs:
        """This learned optimizer with meta-parameters `theta`, as an optax transformation.

        Args:
          theta: meta-parameters from `init` (or meta-training / `load_pretrained`).
          num_steps: the training horizon, for progress features (required when
            `needs_num_steps`).
          learning_rate: a positive float or an optax schedule (of the 0-based update
            index, as `optax.scale_by_learning_rate`). Every update is scaled by
            `learning_rate / nominal_step_size(theta)`, so the step size is the user's, as
            Adam's is. None (default): the nominal step size, the update meta-training saw.
          weight_decay: decoupled weight decay, multiplied by the learning rate (AdamW's
            convention; `nominal_step_size` when `learning_rate` is None).

        Returns:
          `GradientTransformationExtraArgs` whose `update(grads, state, params, *, value=None,
          **extra_args)` needs `params`; `value` (the loss) is required when `needs_value`;
          other extra args are ignored, so it works inside `optax.chain` / `MultiSteps`.
        """
        self.check_theta(theta)
        lr_fn = policy.learning_rate_fn(learning_rate)
        if num_steps is None and self.needs_num_steps:
            raise ValueError(f"{self.name} needs num_steps (the training horizon) for its progress "
                             f"features: call optimizer(theta, num_steps=N)")
        checks.check_num_steps(num_steps)

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
            if not isinstance(state, LOptState):
                raise ValueError(f"{self.name}: state is a {type(state).__name__}, not the "
                                 f"LOptState that tx.init(params) returns")
            param_leaves = checks.check_structures(self.name, treedef, params, state.per_leaf)
            count = optax.safe_increment(state.count)
            extra, glob = self.global_step(theta, state.glob, value, count)
            lr_scale = None if lr_fn is None else (
                lr_fn(count - 1) / self.nominal_step_size(theta))
            ctx = StepContext(count, jnp.concatenate([
                F.time_features(count), F.progress_features(count, num_steps)]), extra,
                lr_scale=lr_scale)
            leaf_states = _untranspose_leaf_states(state.per_leaf, len(grads))
            new_updates, new_leaf_states = [], []
            for g, p, leaf in zip(grads, param_leaves, leaf_states, strict=True):
                if jnp.shape(g) != jnp.shape(p):
                    raise ValueError(f"{self.name}: a gradient has shape {jnp.shape(g)} but its "
                                     f"parameter has shape {jnp.shape(p)}")
                checks.check_leaf_state_shapes(self, p, leaf)
                u, new_leaf = policy.safe_leaf_step(self, theta, g, p, leaf, ctx, weight_decay)
                new_updates.append(u)
                new_leaf_states.append(new_leaf)
            per_leaf = _transpose_leaf_states(new_leaf_states, treedef, type(state.per_leaf))
            return treedef.unflatten(new_updates), LOptState(count, per_leaf, glob)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)

    # ---- shared machinery ---------------------------------------------------------------

    def _leaf_state_type(self) -> type:
        return type(self.init_leaf(jnp.zeros((1,), jnp.float32)))


def _transpose_leaf_states(leaf_states: list, treedef, state_type: type):
    """[LeafState per tensor] -> LeafState of trees (each with the params' structure)."""
    num_fields = len(state_type._fields)
    return state_type(*[treedef.unflatten([s[i] for s in leaf_states])
                        for i in range(num_fields)])


def _untranspose_leaf_states(per_leaf, num_leaves: int) -> list:
    fields = [jax.tree.leaves(tree) for tree in per_leaf]
    return [type(per_leaf)(*[f[i] for f in fields]) for i in range(num_leaves)]
