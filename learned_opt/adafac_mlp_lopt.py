"""`AdafacMLPLOpt`: small per-parameter MLP on Adafactor statistics (Metz et al. 2022,
"small_fc_lopt" of "Practical tradeoffs between memory, compute, and performance in learned
optimizers").

Per parameter entry it keeps only momenta (K_m floats); second moments are Adafactor's factored
row/column accumulators at K_v decays (O(rows + cols) memory for a matrix; vectors and scalars
keep a full accumulator). All accumulator decays are meta-parameters (`decay = sigmoid(logit)`).
Inputs per entry: the gradient and every momentum normalized by the factored second moment,
and the parameter normalized by its tensor's RMS; per tensor: time, progress (so it needs
`num_steps`), shape and log parameter-RMS features. Update:

    delta = -step_mult * (d + x . w_skip) * exp(exp_mult * s)

Default theta: `w_skip` selects momentum(0.9) / sqrt(factored second moment at 0.999) and the
MLP's output starts near zero, so the untrained optimizer is Adafactor-with-momentum at
learning rate `step_mult` (1e-3): a sensible optimizer before meta-training.

    lopt = lo.AdafacMLPLOpt()
    tx = lopt.optimizer(lopt.init(jax.random.key(0)), num_steps=2000)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from learned_opt import features as F
from learned_opt import nets
from learned_opt.base import LearnedOptimizer, StepContext, Theta
from learned_opt.registry import register

_NUM_GLOBAL = len(F.DEFAULT_TIMESCALES) + F.NUM_PROGRESS_FEATURES + F.NUM_SHAPE_FEATURES + 1
_FEATURE_CLIP = 10.0
_MAX_DECAY = 0.9999


class AdafacLeaf(NamedTuple):
    momenta: jax.Array   # (K_m,) + param shape
    v_row: jax.Array     # factored second moments, see features.Factored
    v_col: jax.Array


def _logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


@register("adafac_mlp")
@dataclasses.dataclass(frozen=True, kw_only=True)
class AdafacMLPLOpt(LearnedOptimizer):
    """Per-parameter MLP over Adafactor-normalized momenta, with learnable decays.

    Attributes:
      hidden_size: hidden units of the per-parameter network (one ReLU layer).
      momentum_decays, second_moment_decays: initial accumulator decays (learnable).
      step_mult, exp_mult: output scaling (see module docstring).
    """

    hidden_size: int = 16
    momentum_decays: tuple[float, ...] = (0.5, 0.9, 0.99)
    second_moment_decays: tuple[float, ...] = (0.9, 0.99, 0.999)
    step_mult: float = 1e-3
    exp_mult: float = 1.0

    needs_num_steps = True
    per_tensor_fields = ("v_row", "v_col")

    @property
    def num_features(self) -> int:
        # g * r_k for each second-moment decay, momenta * r_slowest, p / rms(p)
        return len(self.second_moment_decays) + len(self.momentum_decays) + 1

    def init_theta(self, key: jax.Array) -> Theta:
        theta = nets.mlp_init(key, self.num_features, _NUM_GLOBAL, self.hidden_size, 2)
        theta["momentum_decay_logits"] = jnp.asarray(
            [_logit(d) for d in self.momentum_decays], jnp.float32)
        theta["second_moment_decay_logits"] = jnp.asarray(
            [_logit(d) for d in self.second_moment_decays], jnp.float32)
        adam_like = len(self.second_moment_decays) + int(
            np.argmin(np.abs(np.asarray(self.momentum_decays) - 0.9)))
        theta["w_skip"] = jnp.zeros((self.num_features,), jnp.float32).at[adam_like].set(1.0)
        return theta

    def init_leaf(self, p: jax.Array) -> AdafacLeaf:
        zeros = jnp.zeros_like(p, jnp.float32)
        momenta = jnp.broadcast_to(zeros, (len(self.momentum_decays),) + p.shape)
        fac = F.init_factored(p, len(self.second_moment_decays))
        return AdafacLeaf(momenta, fac.row, fac.col)

    def nominal_step_size(self, theta: Theta) -> jax.Array:
        return jnp.asarray(self.step_mult, jnp.float32)

    def _decays(self, theta: Theta) -> tuple[jax.Array, jax.Array]:
        momentum_decays = jnp.minimum(jax.nn.sigmoid(theta["momentum_decay_logits"]), _MAX_DECAY)
        v_decays = jnp.minimum(jax.nn.sigmoid(theta["second_moment_decay_logits"]), _MAX_DECAY)
        return momentum_decays, v_decays

    def leaf_state(self, theta: Theta, g: jax.Array, p: jax.Array, leaf: AdafacLeaf,
                   ctx: StepContext) -> tuple[AdafacLeaf, None]:
        momentum_decays, v_decays = self._decays(theta)
        momenta = F.update_momenta(leaf.momenta, g, momentum_decays)
        fac = F.update_factored(F.Factored(leaf.v_row, leaf.v_col), g, v_decays, ctx.grad)
        return AdafacLeaf(momenta, fac.row, fac.col), None

    def leaf_delta(self, theta: Theta, g: jax.Array, p: jax.Array, new_leaf: AdafacLeaf,
                   aux: None, ctx: StepContext) -> jax.Array:
        momentum_decays, v_decays = self._decays(theta)
        momenta = new_leaf.momenta
        fac = F.Factored(new_leaf.v_row, new_leaf.v_col)
        # Bias corrections are per-tensor scalars folded into per-decay multipliers.
        momentum_bc = F.bias_correction(momentum_decays, ctx.count)
        v_bc_rsqrt = jax.lax.rsqrt(F.bias_correction(v_decays, ctx.count))
        r = F.factored_rsqrt(fac, g.shape)                       # (K_v,) + shape
        num_v, num_m = len(self.second_moment_decays), len(self.momentum_decays)
        r_k = [r[k] * v_bc_rsqrt[k] for k in range(num_v)]
        p_rms = F.tensor_rms(p, 1e-8)
        xs = [jnp.clip(g * r_k[k], -_FEATURE_CLIP, _FEATURE_CLIP) for k in range(num_v)]
        xs += [jnp.clip(momenta[k] * momentum_bc[k] * r_k[-1], -_FEATURE_CLIP,
                        _FEATURE_CLIP) for k in range(num_m)]
        # A multiply by the per-tensor reciprocal, not a divide per entry.
        xs += [jnp.clip(p * (1.0 / p_rms), -_FEATURE_CLIP, _FEATURE_CLIP)]
        z = jnp.concatenate([ctx.global_features, F.shape_features(p.shape),
                             jnp.log(p_rms + 1e-8)[None] / 10.0])
        direction, log_magnitude = nets.mlp_apply(theta, xs, z)
        direction = direction + sum(x * theta["w_skip"][f] for f, x in enumerate(xs))
        return -self.step_mult * direction * jnp.exp(self.exp_mult * log_magnitude)
