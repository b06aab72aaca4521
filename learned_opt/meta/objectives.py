"""Meta-objectives: what a learned optimizer is rewarded for over one truncated unroll.

Each inner step contributes one *term*, the loss of the parameters that step produced, on a
fresh train batch (split "train") or a validation batch (split "valid"). Terms are normalized
per task so families with very different loss scales weigh alike, and clipped so one diverging
task cannot dominate the population average:

    term = min(loss / scale, clip)
    scale = |loss at the trajectory's start|   (normalize="init_loss")
    scale = 1                                  (normalize="none")

A non-finite loss, or any step after a task diverged, contributes `clip` (the worst value).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

OBJECTIVE_SPLITS = ("train", "valid")
NORMALIZATIONS = ("init_loss", "none")


@dataclasses.dataclass(frozen=True)
class MetaObjective:
    """Mean of clipped, normalized per-step losses (see module docstring).

    Attributes:
      split: "train" (loss of the new params on the next train batch) or "valid".
      normalize: "init_loss" (divide by the loss at the start of the trajectory) or "none".
      clip: cap on a term, in normalized units; also the value of a non-finite term.
    """

    split: str = "train"
    normalize: str = "init_loss"
    clip: float = 3.0

    def __post_init__(self):
        if self.split not in OBJECTIVE_SPLITS:
            raise ValueError(f"unknown meta-objective split {self.split!r}; valid: "
                             f"{OBJECTIVE_SPLITS}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalize!r}; valid: {NORMALIZATIONS}")
        if not self.clip > 0:
            raise ValueError(f"meta-objective clip must be positive, got {self.clip}")

    def scale(self, initial_loss: jax.Array) -> jax.Array:
        """Per-trajectory normalizer from the loss at its start (a constant for the meta-grad)."""
        if self.normalize == "none":
            return jnp.ones((), jnp.float32)
        scale = jnp.abs(jax.lax.stop_gradient(initial_loss)) + 1e-8
        return jnp.where(jnp.isfinite(scale), scale, 1.0).astype(jnp.float32)

    def term(self, loss: jax.Array, scale: jax.Array, diverged: jax.Array) -> jax.Array:
        """One step's contribution: `min(loss/scale, clip)`, or `clip` when diverged/non-finite."""
        value = loss.astype(jnp.float32) / scale
        bad = diverged | ~jnp.isfinite(value)
        # Where on a sanitized value keeps NaN out of the gradient of the selected branch.
        safe = jnp.where(bad, 0.0, value)
        return jnp.where(bad, self.clip, jnp.minimum(safe, self.clip))
