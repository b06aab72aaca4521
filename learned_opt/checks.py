"""Input checks of a learned optimizer: theta against its architecture, and grads / params /
optimizer state against each other. Each failure is a ValueError that names the problem.

    check_theta(lopt, theta)                        # in lopt.optimizer(theta)
    leaves = check_structures(name, grads_def, params, state.per_leaf)   # in tx.update
    check_leaf_state_shapes(lopt, p, leaf)          # per parameter tensor
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from learned_opt import registry

if TYPE_CHECKING:
    from learned_opt.base import LearnedOptimizer

PyTree = Any


def check_theta(lopt: LearnedOptimizer, theta: Any) -> None:
    """Raise a ValueError unless `theta` has `lopt`'s structure and shapes."""
    expected = jax.eval_shape(lopt.init, jax.random.key(0))
    got_def, exp_def = jax.tree.structure(theta), jax.tree.structure(expected)
    if got_def != exp_def:
        raise ValueError(
            f"theta does not belong to {lopt!r}: {describe_theta(theta)}; expected keys "
            f"{sorted(expected)}. Create theta with this optimizer's init(key).")
    for path, got, want in zip(jax.tree_util.tree_flatten_with_path(theta)[0],
                               jax.tree.leaves(theta), jax.tree.leaves(expected), strict=True):
        shape = jnp.shape(got)
        if shape != want.shape:
            raise ValueError(
                f"theta{jax.tree_util.keystr(path[0])} has shape {shape} but {lopt!r} expects "
                f"{want.shape}: theta comes from an architecture with other hyperparameters "
                f"({describe_theta(theta)}).")


def check_num_steps(num_steps: Any) -> None:
    """Raise a ValueError unless `num_steps` (a training horizon) is a positive int or None."""
    if num_steps is not None and (not isinstance(num_steps, int) or num_steps <= 0):
        raise ValueError(f"num_steps must be a positive int or None, got {num_steps!r}")


def check_structures(name: str, treedef, params: PyTree, per_leaf: NamedTuple) -> list:
    """Params leaves, after checking grads (`treedef`), params and the optimizer state's
    per-tensor fields (`per_leaf`, each a tree like the params) describe the same tree."""
    param_leaves, param_def = jax.tree.flatten(params)
    if param_def != treedef:
        raise ValueError(f"{name}: grads and params have different tree structures:\n"
                         f"  grads:  {treedef}\n  params: {param_def}")
    for field, tree in zip(per_leaf._fields, per_leaf, strict=True):
        state_def = jax.tree.structure(tree)
        if state_def != treedef:
            raise ValueError(
                f"{name}: params do not match the optimizer state (state.{field} was built by "
                f"tx.init for another params tree):\n  params: {treedef}\n  state:  {state_def}")
    return param_leaves


def check_leaf_state_shapes(lopt: LearnedOptimizer, p: jax.Array, leaf: NamedTuple) -> None:
    """Raise a ValueError unless `leaf` has the state shapes `lopt.init_leaf` gives `p`."""
    expected = jax.eval_shape(lopt.init_leaf, jax.ShapeDtypeStruct(jnp.shape(p), jnp.float32))
    for field, got, want in zip(leaf._fields, leaf, expected, strict=True):
        if jnp.shape(got) != want.shape:
            raise ValueError(
                f"{lopt.name}: params do not match the optimizer state: a parameter of shape "
                f"{jnp.shape(p)} needs state.{field} of shape {want.shape}, the state has "
                f"{jnp.shape(got)} (was tx.init called with other params?)")


def describe_theta(theta: Any) -> str:
    """Which registered architecture (default hyperparameters) a theta looks like."""
    try:
        keys = sorted(theta) if isinstance(theta, dict) else None
    except TypeError:
        keys = None
    if keys is None:
        return f"theta is a {type(theta).__name__}, not a dict of arrays"
    got_def = jax.tree.structure(theta)
    for name, cls in registry.registered().items():
        ref = jax.eval_shape(cls().init, jax.random.key(0))
        if jax.tree.structure(ref) == got_def:
            return f"theta has the structure of {cls.__name__} (registered as {name!r})"
    return f"theta has keys {keys}, which match no registered architecture"
