"""learned_opt: learned optimizers as optax transformations, and their meta-training."""

from learned_opt import tasks

__all__ = ["tasks"]
