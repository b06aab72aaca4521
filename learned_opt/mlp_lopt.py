"""`MLPLOpt`: a per-parameter MLP learned optimizer (Metz et al. 2020, "Tasks, stability...").

For every parameter entry the network sees the gradient, the parameter and momenta at several
decays normalized by the second moment; every tensor adds tanh time / progress features and
shape features (folded into the first layer's bias). It outputs a direction `d` and a
log-magnitude `s`; the update is

    delta = -step_mult * (d + x . w_skip) * exp(exp_mult * s)

Default theta: `w_skip` picks the bias-corrected momentum(0.9) / sqrt(second moment) feature
and the MLP's output layer starts near zero, so the untrained optimizer is Adam with learning
rate `step_mult` (1e-3) plus a small learned perturbation -- a sensible optimizer before any
meta-training, and a good starting point for it.

    lopt = lo.MLPLOpt(hidden_size=32)
    tx = lopt.optimizer(lopt.init(jax.random.key(0)), num_steps=1000)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from learned_opt import features as F
from learned_opt import nets
from learned_opt.base import LearnedOptimizer, StepContext, Theta
from learned_opt.registry import register

# Per-tensor features: time, progress, shape, log parameter RMS.
_NUM_GLOBAL = len(F.DEFAULT_TIMESCALES) + F.NUM_PROGRESS_FEATURES + F.NUM_SHAPE_FEATURES + 1
_FEATURE_CLIP = 10.0


class MLPLeaf(NamedTuple):
    momenta: jax.Array   # (K,) + param shape
    nu: jax.Array        # second moment, param shape


@register("mlp")
@dataclasses.dataclass(frozen=True, kw_only=True)
class MLPLOpt(LearnedOptimizer):
    """Per-parameter MLP over momenta / second-moment features.

    Attributes:
      hidden_size: hidden units of the per-parameter network (one ReLU layer).
      momentum_decays: decays of the momenta (one feature each).
      second_moment_decay: decay of the second moment that normalizes them.
      step_mult, exp_mult: output scaling (see module docstring).
      eps: added to sqrt(second moment).
    """

    hidden_size: int = 16
    momentum_decays: tuple[float, ...] = (0.5, 0.9, 0.99)
    second_moment_decay: float = 0.999
    step_mult: float = 1e-3
    exp_mult: float = 1.0
    eps: float = 1e-8

    @property
    def num_features(self) -> int:
        # g*r, momenta*r, p/rms(p), g/rms(g)
        return 3 + len(self.momentum_decays)

    def init_theta(self, key: jax.Array) -> Theta:
        theta = nets.mlp_init(key, self.num_features, _NUM_GLOBAL, self.hidden_size, 2)
        adam_like = 1 + min(range(len(self.momentum_decays)),
                            key=lambda i: abs(self.momentum_decays[i] - 0.9))
        theta["w_skip"] = jnp.zeros((self.num_features,), jnp.float32).at[adam_like].set(1.0)
        return theta

    def init_leaf(self, p: jax.Array) -> MLPLeaf:
        zeros = jnp.zeros_like(p, jnp.float32)
        momenta = jnp.broadcast_to(zeros, (len(self.momentum_decays),) + p.shape)
        return MLPLeaf(momenta, jnp.zeros_like(p, jnp.float32))

    def nominal_step_size(self, theta: Theta) -> jax.Array:
        return jnp.asarray(self.step_mult, jnp.float32)

    def leaf_state(self, theta: Theta, g: jax.Array, p: jax.Array, leaf: MLPLeaf,
                   ctx: StepContext) -> tuple[MLPLeaf, None]:
        decays = jnp.asarray(self.momentum_decays, jnp.float32)
        momenta = F.update_momenta(leaf.momenta, g, decays)
        nu = F.update_second_moment(leaf.nu, g, self.second_moment_decay)
        return MLPLeaf(momenta, nu), None

    def leaf_delta(self, theta: Theta, g: jax.Array, p: jax.Array, new_leaf: MLPLeaf,
                   aux: None, ctx: StepContext) -> jax.Array:
        decays = jnp.asarray(self.momentum_decays, jnp.float32)
        # Bias corrections are per-tensor scalars: apply them to small vectors, not to tensors.
        momentum_bc = F.bias_correction(decays, ctx.count)
        nu_bc = F.bias_correction(jnp.float32(self.second_moment_decay), ctx.count)
        r = F.rsqrt_eps(new_leaf.nu * nu_bc, self.eps)
        p_rms = F.tensor_rms(p, 1e-8)
        g_rms = F.grad_rms(ctx.grad, g.size, 1e-12)
        xs = [g * r]
        xs += [new_leaf.momenta[k] * (momentum_bc[k] * r)
               for k in range(len(self.momentum_decays))]
        xs += [jnp.clip(p / p_rms, -_FEATURE_CLIP, _FEATURE_CLIP),
               jnp.clip(g / g_rms, -_FEATURE_CLIP, _FEATURE_CLIP)]
        z = jnp.concatenate([ctx.global_features, F.shape_features(p.shape),
                             jnp.log(p_rms + 1e-8)[None] / 10.0])
        direction, log_magnitude = nets.mlp_apply(theta, xs, z)
        direction = direction + sum(x * theta["w_skip"][f] for f, x in enumerate(xs))
        return -self.step_mult * direction * jnp.exp(self.exp_mult * log_magnitude)
