"""learned_opt: learned optimizers as optax transformations, and their meta-training.

    import learned_opt as lo
    lopt = lo.get_lopt("mlp")                   # or lo.MLPLOpt(); names: lo.list_lopts()
    theta = lopt.init(jax.random.key(0))
    tx = lopt.optimizer(theta, num_steps=1000)  # optax.GradientTransformationExtraArgs
    tx = lo.NormMLPLOpt().optimizer(theta2, learning_rate=3e-3)  # scale-free, no horizon
"""

from learned_opt import features, tasks
from learned_opt.adafac_mlp_lopt import AdafacMLPLOpt
from learned_opt.base import LearnedOptimizer, LOptState
from learned_opt.hyper_lopt import HyperLOpt
from learned_opt.learned_adam import LearnedAdam
from learned_opt.lstm_lopt import LSTMLOpt
from learned_opt.mlp_lopt import MLPLOpt
from learned_opt.norm_mlp_lopt import NormMLPLOpt
from learned_opt.pretrained import list_pretrained, load_pretrained, load_pretrained_theta
from learned_opt.registry import get_lopt, list_lopts

__all__ = [
    "AdafacMLPLOpt",
    "HyperLOpt",
    "LOptState",
    "LSTMLOpt",
    "LearnedAdam",
    "LearnedOptimizer",
    "MLPLOpt",
    "NormMLPLOpt",
    "features",
    "get_lopt",
    "list_lopts",
    "list_pretrained",
    "load_pretrained",
    "load_pretrained_theta",
    "tasks",
]
