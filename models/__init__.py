"""models: flax NNX models, offline datasets, tasks and task families.

    import models
    task = models.get_task("digits_mlp", hidden=(64, 64), batch_size=128)
    family = models.get_family("digits_mlp")
    models.list_tasks(), models.list_families(), models.ood_suite(), models.heldout_tasks(...)

Models: `nets` (MLP, CNN, residual MLP), `transformer` (the zoo's flax LM), `functional_lm`
(a pure-function LM with the hooks `parallel.tensor_parallel` fills in).
"""

from models import datasets, families, functional_lm, nets, synthetic, tasks
from models.registry import (
    get_family,
    get_task,
    heldout_tasks,
    list_families,
    list_tasks,
    ood_suite,
    task_defaults,
)

__all__ = [
    "datasets",
    "families",
    "functional_lm",
    "get_family",
    "get_task",
    "heldout_tasks",
    "list_families",
    "list_tasks",
    "nets",
    "ood_suite",
    "synthetic",
    "task_defaults",
    "tasks",
]
