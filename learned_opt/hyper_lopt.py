"""`HyperLOpt`: a hierarchical, VeLO-style learned optimizer (Metz et al. 2022, "VeLO").

Two levels:
  * per tensor, an LSTM (shared weights, `tensor_hidden` units, state kept per tensor) reads
    tensor statistics (log RMS of gradient, parameter and momentum, shape features), training
    time / progress features, and loss features computed from `value` (the loss: required);
  * it emits mixing weights over a bank of `num_mlps` per-parameter MLPs and a per-tensor log
    step scale. The bank's weights are mixed per tensor (weight space, like VeLO), so every
    parameter entry runs ONE small MLP whatever the bank size.

Per-entry inputs: the gradient and momenta (several decays) normalized by the second moment, and
the parameter normalized by its tensor's RMS. Update:

    delta = -step_mult * exp(tensor_log_scale) * (d + x . w_skip) * exp(exp_mult * s)

Default theta: `w_skip` selects bias-corrected momentum(0.9) / sqrt(second moment), the
LSTM's output heads and the MLPs' output layers start near zero, so the untrained optimizer is
Adam with learning rate `step_mult` (1e-3).

    lopt = lo.HyperLOpt()
    tx = lopt.optimizer(lopt.init(jax.random.key(0)), num_steps=1000)
    updates, state = tx.update(grads, state, params, value=loss)
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

_FEATURE_CLIP = 10.0
_NUM_TENSOR_STATS = 4   # log rms of g, p, momentum(slow); fraction of non-zero gradient
_NUM_GLOBAL_MLP = F.NUM_SHAPE_FEATURES + 1


class HyperLeaf(NamedTuple):
    momenta: jax.Array   # (K,) + param shape
    nu: jax.Array        # second moment, param shape
    lstm_h: jax.Array    # (tensor_hidden,) per-tensor LSTM state
    lstm_c: jax.Array


class LossState(NamedTuple):
    loss_ema: jax.Array  # (K_loss,) EMAs of the loss


@register("hyper")
@dataclasses.dataclass(frozen=True, kw_only=True)
class HyperLOpt(LearnedOptimizer):
    """Per-tensor LSTM producing per-parameter MLP weights (a mixture of a bank) and step scale.

    Attributes:
      tensor_hidden: units of the per-tensor LSTM.
      num_mlps: size of the bank of per-parameter MLPs.
      hidden_size: hidden units of each per-parameter MLP.
      momentum_decays, second_moment_decay: accumulators of the per-entry features.
      loss_decays: decays of the loss EMAs behind the loss features.
      step_mult, exp_mult: output scaling.
    """

    tensor_hidden: int = 16
    num_mlps: int = 4
    hidden_size: int = 8
    momentum_decays: tuple[float, ...] = (0.5, 0.9, 0.99)
    second_moment_decay: float = 0.999
    loss_decays: tuple[float, ...] = (0.5, 0.9, 0.99)
    step_mult: float = 1e-3
    exp_mult: float = 1.0

    needs_value = True
    per_tensor_fields = ("lstm_h", "lstm_c")
    premasked_fields = ("momenta",)

    @property
    def num_features(self) -> int:
        return 2 + len(self.momentum_decays)  # g*r, momenta*r, p/rms(p)

    @property
    def num_tensor_inputs(self) -> int:
        return (_NUM_TENSOR_STATS + F.NUM_SHAPE_FEATURES + len(F.DEFAULT_TIMESCALES)
                + F.NUM_PROGRESS_FEATURES + 2 * len(self.loss_decays))

    def init_theta(self, key: jax.Array) -> Theta:
        k_lstm, k_mix, k_scale, k_bank = jax.random.split(key, 4)
        bank_keys = jax.random.split(k_bank, self.num_mlps)
        bank = [nets.mlp_init(k, self.num_features, _NUM_GLOBAL_MLP, self.hidden_size, 2)
                for k in bank_keys]
        adam_like = 1 + int(np.argmin(np.abs(np.asarray(self.momentum_decays) - 0.9)))
        return {
            "lstm": nets.lstm_init(k_lstm, self.num_tensor_inputs, self.tensor_hidden),
            "w_mix": nets.dense_init(k_mix, self.tensor_hidden, self.num_mlps, scale=1e-2),
            "w_scale": nets.dense_init(k_scale, self.tensor_hidden, 1, scale=1e-2)[:, 0],
            "bank": jax.tree.map(lambda *w: jnp.stack(w), *bank),
            "w_skip": jnp.zeros((self.num_features,), jnp.float32).at[adam_like].set(1.0),
        }

    def init_leaf(self, p: jax.Array) -> HyperLeaf:
        zeros = jnp.zeros_like(p, jnp.float32)
        momenta = jnp.broadcast_to(zeros, (len(self.momentum_decays),) + p.shape)
        return HyperLeaf(momenta, jnp.zeros_like(p, jnp.float32),
                         jnp.zeros((self.tensor_hidden,), jnp.float32),
                         jnp.zeros((self.tensor_hidden,), jnp.float32))

    def init_global(self) -> LossState:
        return LossState(jnp.zeros((len(self.loss_decays),), jnp.float32))

    def global_step(self, theta: Theta, glob: LossState, value, count):
        """Loss features from `value` against the loss EMAs, then update the EMAs.

        A non-finite loss gives zero features and leaves the EMAs unchanged.
        """
        value = jnp.asarray(value, jnp.float32)
        finite = jnp.isfinite(value)
        value = jnp.where(finite, value, 0.0)
        first = count == 1
        ema = jnp.where(first, value, glob.loss_ema)  # EMAs start at the first loss
        feats = jnp.where(finite, F.loss_features(value, ema), 0.0)
        decays = jnp.asarray(self.loss_decays, jnp.float32)
        new_ema = jnp.where(finite, decays * ema + (1.0 - decays) * value, glob.loss_ema)
        return feats, LossState(new_ema)

    def nominal_step_size(self, theta: Theta) -> jax.Array:
        return jnp.asarray(self.step_mult, jnp.float32)

    def leaf_state(self, theta: Theta, g: jax.Array, p: jax.Array, leaf: HyperLeaf,
                   ctx: StepContext) -> tuple[HyperLeaf, None]:
        decays = jnp.asarray(self.momentum_decays, jnp.float32)
        momenta = F.update_momenta(leaf.momenta, g, decays)
        # Written (masked) before the LSTM's statistic reads it back: a reduction over the
        # unwritten momenta would keep the old ones live and make XLA copy them. (So a
        # non-finite gradient entry enters the statistic with its kept, old momentum.)
        momenta = F.keep_finite(ctx.grad.finite, momenta, leaf.momenta)
        nu = F.update_second_moment(leaf.nu, g, self.second_moment_decay)
        p_rms = F.tensor_rms(p, 1e-8)
        g_rms = F.grad_rms(ctx.grad, g.size, 1e-12)
        nonzero = ctx.grad.nonzero / g.size
        # Level 1: the per-tensor LSTM.
        stats = jnp.stack([
            jnp.log(g_rms) / 10.0,
            jnp.log(p_rms) / 10.0,
            jnp.log(F.tensor_rms(momenta[-1], 1e-12)) / 10.0,
            nonzero,
        ])
        tensor_in = jnp.concatenate([stats, F.shape_features(p.shape), ctx.global_features,
                                     ctx.extra])
        lstm_h, lstm_c = nets.lstm_cell(theta["lstm"], tensor_in, leaf.lstm_h, leaf.lstm_c)
        return HyperLeaf(momenta, nu, lstm_h, lstm_c), None

    def leaf_delta(self, theta: Theta, g: jax.Array, p: jax.Array, new_leaf: HyperLeaf,
                   aux: None, ctx: StepContext) -> jax.Array:
        decays = jnp.asarray(self.momentum_decays, jnp.float32)
        momentum_bc = F.bias_correction(decays, ctx.count)
        r = F.rsqrt_eps(new_leaf.nu * F.bias_correction(jnp.float32(self.second_moment_decay),
                                                        ctx.count))
        p_rms = F.tensor_rms(p, 1e-8)
        mix = jax.nn.softmax(new_leaf.lstm_h @ theta["w_mix"])
        log_scale = new_leaf.lstm_h @ theta["w_scale"]

        # Level 2: one per-entry MLP whose weights are this tensor's mixture of the bank.
        mlp = jax.tree.map(lambda w: jnp.tensordot(mix, w, axes=1), theta["bank"])
        xs = [g * r]
        xs += [new_leaf.momenta[k] * (momentum_bc[k] * r)
               for k in range(len(self.momentum_decays))]
        xs += [jnp.clip(p / p_rms, -_FEATURE_CLIP, _FEATURE_CLIP)]
        z = jnp.concatenate([F.shape_features(p.shape), jnp.log(p_rms + 1e-8)[None] / 10.0])
        direction, log_magnitude = nets.mlp_apply(mlp, xs, z)
        direction = direction + sum(x * theta["w_skip"][..., f] for f, x in enumerate(xs))
        step = self.step_mult * jnp.exp(log_scale)
        return -step * direction * jnp.exp(self.exp_mult * log_magnitude)
