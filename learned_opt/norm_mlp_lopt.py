"""`NormMLPLOpt`: a scale-free per-parameter MLP whose step size is the user's learning rate.

The design follows Celo2 (Moudgil et al. 2026, arXiv 2602.19142) in its principles, written on
this library's feature library and per-parameter network:

* **Normalised inputs.** Per entry: the gradient, the gradient clipped to [-1, 1] after
  normalisation, the parameter, momenta at 0.9 / 0.99 / 0.999, the second moment (as its square
  root), each momentum times rsqrt(second moment) (Adam's direction at three decays), and the
  gradient and momentum(0.9) normalised by Adafactor's factored second moment. Every input is
  divided by its RMS over the tensor, so scaling all gradients by c > 0 leaves every input, and
  so the update, unchanged (Adam's bias corrections are per-tensor constants that cancel too).
  Per tensor only shape features enter (through the first layer's bias).
* **No horizon, step-count or loss inputs.** `value` is accepted and ignored; `num_steps` never
  enters the network (it only shapes a float learning rate over the run: see below).
* **Normalised output direction.** The network's direction `(d + x . w_skip) * exp(s)` is
  divided by its RMS over the tensor at every step (`normalize_output`).
* **Magnitude = learning rate.** `update = -learning_rate * direction`, with `learning_rate` a
  float or an optax schedule (default `step_mult`); the shared parameter-scale policy is off.
  A direction of fixed RMS never shrinks by itself (Adam's does, as gradients fall below their
  history), so a constant rate leaves a floor of oscillation. Given the horizon, a float rate
  (or the default) is therefore the peak of `default_schedule` over it: warmup + cosine to 0
  (`policy.horizon_schedule`, the benchmark's schedule). No horizon, or a schedule passed as
  `learning_rate`: the rate is used as given. `num_steps` never enters the network.
* **Options of the one factory `optimizer(...)`**: `orthogonalize` replaces the direction of
  every matrix (see `learned_opt.orthogonal` for the rank >= 2 -> matrix rule: conv kernels
  `(kh, kw, c_in, c_out)` become `(kh * kw * c_in, c_out)`) by its Newton-Schulz
  orthogonalisation (optax's), then RMS-normalised; `adamw_for_vectors` routes vectors and
  scalars (biases, norm scales) to `optax.adamw` at the same learning rate, and
  `optimizer(..., adamw_mask=fn)` routes any tensors (e.g. embeddings) through
  `optax.partition`.

Default theta: `w_skip` picks momentum(0.9) * rsqrt(second moment) and the MLP's output layer
starts near zero, so the untrained optimizer is Adam's direction, RMS-normalised per tensor (and
orthogonalised for matrices): a sensible optimizer before meta-training.

    lopt = lo.NormMLPLOpt()
    theta = lopt.init(jax.random.key(0))
    tx = lopt.optimizer(theta, num_steps=1000)                   # 3e-3 peak, warmup + cosine
    tx = lopt.optimizer(theta, num_steps=1000, learning_rate=1e-3)      # 1e-3 peak
    tx = lopt.optimizer(theta, learning_rate=optax.cosine_decay_schedule(3e-3, 1000))
    tx = lopt.optimizer(theta, learning_rate=1e-3)               # constant (no horizon given)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from learned_opt import checks, nets, orthogonal, policy
from learned_opt import features as F
from learned_opt.base import LearnedOptimizer, StepContext, Theta
from learned_opt.registry import register

_FEATURE_CLIP = 10.0
_LOG_MAGNITUDE_CLIP = 5.0
_TINY = 1e-30
MOMENTUM_DECAYS = (0.9, 0.99, 0.999)
NUM_FEATURES = 6 + 2 * len(MOMENTUM_DECAYS)
SKIP_FEATURE = 3 + len(MOMENTUM_DECAYS) + 1   # momentum(0.9) * rsqrt(second moment)


class NormMLPLeaf(NamedTuple):
    momenta: jax.Array   # (3,) + param shape, decays MOMENTUM_DECAYS
    nu: jax.Array        # second moment (decay second_moment_decay), param shape
    v_row: jax.Array     # Adafactor factored second moment (one decay), see features.Factored
    v_col: jax.Array


def rms_normalize(x: jax.Array, clip: float = _FEATURE_CLIP) -> jax.Array:
    """`x` divided by its RMS over the whole tensor (0 stays 0), clipped to [-clip, clip]."""
    inv_rms = 1.0 / (F.safe_sqrt(jnp.mean(jnp.square(x))) + _TINY)
    return jnp.clip(x * inv_rms, -clip, clip)


def vectors_mask(params: Any) -> Any:
    """True for the tensors `adamw_for_vectors` sends to AdamW: those that are no matrix
    (vectors, scalars, one-row / one-column tensors; see `learned_opt.orthogonal`)."""
    return jax.tree.map(lambda p: not orthogonal.is_matrix(jnp.shape(p)), params)


@register("norm_mlp")
@dataclasses.dataclass(frozen=True, kw_only=True)
class NormMLPLOpt(LearnedOptimizer):
    """Scale-free per-parameter MLP with a normalised direction; magnitude = learning rate.

    Attributes:
      hidden_size: hidden units of the per-parameter network (one ReLU layer).
      second_moment_decay: decay of the (full and factored) second moments.
      step_mult: the default learning rate (used when `optimizer` gets none).
      exp_mult: scale of the network's per-entry log-magnitude output.
      normalize_output: divide the direction (orthogonalised or not) by its RMS over the
        tensor at every step; off: the raw network output (or its orthogonalisation).
      orthogonalize: orthogonalise the direction of every matrix (Newton-Schulz).
      ns_steps: Newton-Schulz iterations.
      adamw_for_vectors: vectors and scalars use AdamW (b1 0.9, b2 0.999) at the same
        learning rate and weight decay, not the learned rule.
      eps: added to sqrt(second moment).
      default_schedule: the shape a float (or default) learning rate takes when `optimizer`
        is given `num_steps`: "warmup_cosine" (5% linear warmup, cosine to 0 at `num_steps`)
        or "constant" (see `learned_opt.policy.horizon_schedule`).
    """

    max_update: float = 1.0
    hidden_size: int = 16
    second_moment_decay: float = 0.999
    step_mult: float = 3e-3
    exp_mult: float = 1.0
    normalize_output: bool = True
    orthogonalize: bool = True
    ns_steps: int = 5
    adamw_for_vectors: bool = False
    eps: float = 1e-12
    default_schedule: str = "warmup_cosine"

    per_tensor_fields = ("v_row", "v_col")
    uses_param_scale = False

    def __post_init__(self):
        if self.default_schedule not in policy.HORIZON_SCHEDULES:
            raise ValueError(f"unknown default_schedule {self.default_schedule!r}; valid "
                             f"choices: {list(policy.HORIZON_SCHEDULES)}")

    @property
    def num_features(self) -> int:
        return NUM_FEATURES

    def init_theta(self, key: jax.Array) -> Theta:
        theta = nets.mlp_init(key, NUM_FEATURES, F.NUM_SHAPE_FEATURES, self.hidden_size, 2)
        theta["w_skip"] = jnp.zeros((NUM_FEATURES,), jnp.float32).at[SKIP_FEATURE].set(1.0)
        return theta

    def init_leaf(self, p: jax.Array) -> NormMLPLeaf:
        zeros = jnp.zeros_like(p, jnp.float32)
        momenta = jnp.broadcast_to(zeros, (len(MOMENTUM_DECAYS),) + p.shape)
        fac = F.init_factored(p, 1)
        return NormMLPLeaf(momenta, jnp.zeros_like(p, jnp.float32), fac.row, fac.col)

    def nominal_step_size(self, theta: Theta) -> jax.Array:
        return jnp.asarray(self.step_mult, jnp.float32)

    def leaf_state(self, theta: Theta, g: jax.Array, p: jax.Array, leaf: NormMLPLeaf,
                   ctx: StepContext) -> tuple[NormMLPLeaf, None]:
        momenta = F.update_momenta(leaf.momenta, g, jnp.asarray(MOMENTUM_DECAYS, jnp.float32))
        nu = F.update_second_moment(leaf.nu, g, self.second_moment_decay)
        decay = jnp.asarray([self.second_moment_decay], jnp.float32)
        fac = F.update_factored(F.Factored(leaf.v_row, leaf.v_col), g, decay, ctx.grad)
        return NormMLPLeaf(momenta, nu, fac.row, fac.col), None

    def features(self, g: jax.Array, p: jax.Array, leaf: NormMLPLeaf) -> list[jax.Array]:
        """The NUM_FEATURES per-entry inputs, each RMS-normalised over the tensor."""
        r = F.rsqrt_eps(leaf.nu, self.eps)
        r_fac = F.factored_rsqrt(F.Factored(leaf.v_row, leaf.v_col), g.shape)[0]
        g_n = rms_normalize(g)
        xs = [g_n, jnp.clip(g_n, -1.0, 1.0), rms_normalize(p)]
        xs += [rms_normalize(leaf.momenta[k]) for k in range(len(MOMENTUM_DECAYS))]
        xs += [rms_normalize(F.safe_sqrt(leaf.nu))]
        xs += [rms_normalize(leaf.momenta[k] * r) for k in range(len(MOMENTUM_DECAYS))]
        xs += [rms_normalize(g * r_fac), rms_normalize(leaf.momenta[0] * r_fac)]
        return xs

    def direction(self, theta: Theta, xs: list[jax.Array], shape) -> jax.Array:
        """The update direction (before the learning rate) from the features."""
        d, log_magnitude = nets.mlp_apply(theta, xs, F.shape_features(shape))
        d = d + sum(x * theta["w_skip"][f] for f, x in enumerate(xs))
        log_magnitude = jnp.clip(self.exp_mult * log_magnitude, -_LOG_MAGNITUDE_CLIP,
                                 _LOG_MAGNITUDE_CLIP)
        # `u` is a large fusion (the unrolled network) that XLA's CPU backend duplicates into
        # each of its consumers (optimization barriers are dropped there): the orthogonaliser
        # consumes it in two products only (see `orthogonal.newton_schulz`).
        u = d * jnp.exp(log_magnitude)
        if self.orthogonalize and orthogonal.is_matrix(shape):
            # Then normalised like any other direction, so matrices and other tensors move
            # alike (an orthogonal m x n matrix itself has RMS 1/sqrt(max(m, n))).
            u = orthogonal.orthogonalize(u, self.ns_steps)
        if self.normalize_output:
            u = u / (F.safe_sqrt(jnp.mean(jnp.square(u))) + _TINY)
        return u

    def leaf_delta(self, theta: Theta, g: jax.Array, p: jax.Array, new_leaf: NormMLPLeaf,
                   aux: None, ctx: StepContext) -> jax.Array:
        return -self.step_mult * self.direction(theta, self.features(g, p, new_leaf), g.shape)

    def horizon_learning_rate(self, learning_rate: policy.LearningRate | None,
                              num_steps: int | None) -> policy.LearningRate | None:
        """The learning rate `optimizer` runs: a float (or None: `step_mult`) becomes the peak
        of `default_schedule` over `num_steps` when it is given; a schedule, or no horizon,
        leaves `learning_rate` as it is (None stays the nominal step)."""
        if callable(learning_rate) or num_steps is None or self.default_schedule == "constant":
            return learning_rate
        policy.learning_rate_fn(learning_rate)  # a bad float fails here, named as such
        checks.check_num_steps(num_steps)
        peak = self.step_mult if learning_rate is None else learning_rate
        return policy.horizon_schedule(self.default_schedule, peak, num_steps)

    def optimizer(self, theta: Theta, num_steps: int | None = None, *,
                  learning_rate: policy.LearningRate | None = None, weight_decay: float = 0.0,
                  adamw_mask: Callable[[Any], Any] | None = None
                  ) -> optax.GradientTransformationExtraArgs:
        """The optax transformation (see `LearnedOptimizer.optimizer` for the common args).

        Args:
          num_steps: the training horizon. With it, a float `learning_rate` (default
            `step_mult`) is the peak of `default_schedule` over `num_steps`; it never enters
            the network (no horizon features), and without it a float rate is constant.
          learning_rate: float or optax schedule (used as given); default `step_mult`.
          adamw_mask: params -> tree of bools, True for tensors that use AdamW instead of the
            learned rule (default: `vectors_mask` when `adamw_for_vectors`, else none). The
            result is then an `optax.partition` of the two.

            tx = lopt.optimizer(theta, learning_rate=1e-3, adamw_mask=lambda params: {
                **jax.tree.map(lambda _: False, params), "embed": True})
        """
        learning_rate = self.horizon_learning_rate(learning_rate, num_steps)
        learned = super().optimizer(theta, num_steps, learning_rate=learning_rate,
                                    weight_decay=weight_decay)
        if adamw_mask is None and self.adamw_for_vectors:
            adamw_mask = vectors_mask
        if adamw_mask is None:
            return learned
        lr = self.step_mult if learning_rate is None else learning_rate
        adamw = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)

        def labels(params):
            return jax.tree.map(lambda use_adamw: "adamw" if use_adamw else "learned",
                                adamw_mask(params))

        return optax.partition({"learned": learned, "adamw": adamw}, labels)
