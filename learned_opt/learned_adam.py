"""`LearnedAdam`: Adam whose learning rate, betas and epsilon are meta-parameters.

The "start simple" baseline every other architecture must beat. Its default `theta` is exactly
Adam(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8) with bias correction (then the shared bound and
parameter-scale policies of `LearnedOptimizer`). With `per_tensor=True` the log learning rate
of each tensor is `log_lr + w . shape_features(tensor)`, with `w` a meta-parameter (zero at init),
so a meta-trained LearnedAdam can give embeddings, matrices and biases different step sizes
while `theta` stays independent of the params tree.

    lopt = lo.LearnedAdam(per_tensor=True)
    tx = lopt.optimizer(lopt.init(jax.random.key(0)))
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from learned_opt import features as F
from learned_opt.base import LearnedOptimizer, StepContext, Theta
from learned_opt.registry import register


class AdamLeaf(NamedTuple):
    mu: jax.Array   # first moment, param shape
    nu: jax.Array   # second moment, param shape


def _decay(log_one_minus: jax.Array) -> jax.Array:
    """A decay in [0, 1) from log(1 - decay), clipped so that it stays a decay."""
    return 1.0 - jnp.exp(jnp.minimum(log_one_minus, 0.0))


@register("learned_adam")
@dataclasses.dataclass(frozen=True, kw_only=True)
class LearnedAdam(LearnedOptimizer):
    """Adam with learnable log lr, log(1 - beta1), log(1 - beta2), log eps.

    Attributes:
      learning_rate, beta1, beta2, eps: the default theta's Adam hyperparameters.
      per_tensor: learn a per-tensor log-lr offset from tensor-shape features.
    """

    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    per_tensor: bool = False

    def init_theta(self, key: jax.Array) -> Theta:
        del key  # deterministic default
        theta = {
            "log_lr": np.log(self.learning_rate),
            "log_one_minus_beta1": np.log1p(-self.beta1),
            "log_one_minus_beta2": np.log1p(-self.beta2),
            "log_eps": np.log(self.eps),
        }
        theta = {k: jnp.asarray(v, jnp.float32) for k, v in theta.items()}
        if self.per_tensor:
            theta["tensor_lr_weights"] = jnp.zeros((F.NUM_SHAPE_FEATURES,), jnp.float32)
        return theta

    def init_leaf(self, p: jax.Array) -> AdamLeaf:
        # Two separate buffers, so a caller may donate the state.
        return AdamLeaf(jnp.zeros_like(p, jnp.float32), jnp.zeros_like(p, jnp.float32))

    def nominal_step_size(self, theta: Theta) -> jax.Array:
        return jnp.exp(theta["log_lr"])

    def leaf_state(self, theta: Theta, g: jax.Array, p: jax.Array, leaf: AdamLeaf,
                   ctx: StepContext) -> tuple[AdamLeaf, None]:
        beta1 = _decay(theta["log_one_minus_beta1"])
        beta2 = _decay(theta["log_one_minus_beta2"])
        mu = beta1 * leaf.mu + (1.0 - beta1) * g
        nu = F.update_second_moment(leaf.nu, g, beta2)
        return AdamLeaf(mu, nu), None

    def leaf_delta(self, theta: Theta, g: jax.Array, p: jax.Array, new_leaf: AdamLeaf,
                   aux: None, ctx: StepContext) -> jax.Array:
        beta1 = _decay(theta["log_one_minus_beta1"])
        beta2 = _decay(theta["log_one_minus_beta2"])
        log_lr = theta["log_lr"]
        if self.per_tensor:
            log_lr = log_lr + jnp.dot(theta["tensor_lr_weights"], F.shape_features(p.shape))
        # Bias corrections are per-tensor scalars; fold them into one scalar step size.
        t = ctx.count.astype(jnp.float32)
        step = jnp.exp(log_lr) / (1.0 - jnp.power(beta1, t))
        nu_scale = jnp.sqrt(1.0 / (1.0 - jnp.power(beta2, t)))
        return -step * new_leaf.mu / (F.safe_sqrt(new_leaf.nu) * nu_scale
                                      + jnp.exp(theta["log_eps"]))
