"""Named tasks and families: get_task, list_tasks, get_family, list_families, evaluation suites.

    task = get_task("digits_mlp", hidden=(64, 64), batch_size=128)
    family = get_family("mnist1d_mlp")
    for name, task in ood_suite(): ...           # evaluation only, never meta-training
    tasks = heldout_tasks("digits_mlp", n=4, seed=0)

Each named task is a factory with keyword defaults; `get_task` accepts exactly those keywords
as overrides (`task_defaults(name)` lists them) and rejects anything else by name. Size
arguments (widths, depths, batch sizes, ...) are checked before anything is built
(`models.task_sizes`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import jax

from models import datasets
from models.families import FAMILIES
from models.nets import CNN, MLP, Functional, ResMLP
from models.synthetic import QuadraticTask, RosenbrockTask
from models.task_sizes import check_sizes
from models.tasks import LanguageModelTask, SupervisedTask
from models.text_corpus import stdlib_corpus
from models.transformer import TransformerLM


def _classifier_task(name, data, make_module, batch_size, init_scale=1.0):
    return SupervisedTask(
        name, Functional(make_module), data, batch_size, loss_kind="softmax", init_scale=init_scale
    )


@check_sizes
def quadratic(dim=16, log10_condition=2.0, noise_std=0.1, batch_size=8, seed=0):
    """Rotated quadratic, condition number 10**log10_condition, noisy train targets."""
    return QuadraticTask(
        dim,
        log10_condition=log10_condition,
        noise_std=noise_std,
        batch_size=batch_size,
        data_key=jax.random.key(seed),
    )


@check_sizes
def rosenbrock(dim=2, noise_std=0.0, init_scale=0.1):
    """Chained Rosenbrock from the classic start (-1.2, 1, ...)."""
    return RosenbrockTask(dim, noise_std=noise_std, init_scale=init_scale)


@check_sizes
def logistic(input_dim=20, batch_size=64, seed=0):
    """Binary logistic regression (linear model, sigmoid cross-entropy) on synthetic data."""
    data = datasets.synthetic_logistic(input_dim=input_dim, seed=seed)
    net = Functional(lambda rngs: MLP(input_dim, (), 1, rngs=rngs))
    return SupervisedTask("logistic", net, data, batch_size, loss_kind="sigmoid")


@check_sizes
def regression_mlp(hidden=(32, 32), activation="relu", batch_size=64, input_dim=16, seed=0):
    """A 16-32-32-1 MLP regressing a random tanh teacher (mean squared error), batch 64."""
    data = datasets.synthetic_regression(input_dim=input_dim, seed=seed)
    hidden = tuple(hidden)
    net = Functional(lambda rngs: MLP(input_dim, hidden, 1, activation=activation, rngs=rngs))
    return SupervisedTask("regression_mlp", net, data, batch_size, loss_kind="mse")


@check_sizes
def digits_mlp(hidden=(64,), activation="relu", batch_size=64, init_scale=1.0):
    """MLP on scikit-learn's 8x8 digits."""
    hidden = tuple(hidden)
    return _classifier_task(
        "digits_mlp",
        datasets.digits(),
        lambda rngs: MLP(64, hidden, 10, activation=activation, rngs=rngs),
        batch_size,
        init_scale,
    )


@check_sizes
def digits_cnn(channels=(8, 16), activation="relu", batch_size=64):
    """Small 2-D CNN on 8x8 digits."""
    channels = tuple(channels)
    return _classifier_task(
        "digits_cnn",
        datasets.digits(),
        lambda rngs: CNN((8, 8, 1), channels, 10, activation=activation, rngs=rngs),
        batch_size,
    )


@check_sizes
def digits_resmlp(width=64, depth=3, activation="relu", batch_size=64):
    """Residual MLP (pre-LayerNorm blocks) on 8x8 digits."""
    return _classifier_task(
        "digits_resmlp",
        datasets.digits(),
        lambda rngs: ResMLP(64, width, depth, 10, activation=activation, rngs=rngs),
        batch_size,
    )


@check_sizes
def mnist1d_mlp(hidden=(100, 100), activation="relu", batch_size=64, init_scale=1.0):
    """MLP on procedurally generated mnist1d (40-sample signals, 10 classes)."""
    hidden = tuple(hidden)
    return _classifier_task(
        "mnist1d_mlp",
        datasets.mnist1d(),
        lambda rngs: MLP(40, hidden, 10, activation=activation, rngs=rngs),
        batch_size,
        init_scale,
    )


@check_sizes
def mnist1d_cnn(channels=(32, 32, 32), activation="relu", batch_size=64):
    """1-D CNN on mnist1d."""
    channels = tuple(channels)
    return _classifier_task(
        "mnist1d_cnn",
        datasets.mnist1d(),
        lambda rngs: CNN((40, 1), channels, 10, activation=activation, rngs=rngs),
        batch_size,
    )


@check_sizes
def text_transformer(
    seq_len=32, d_model=64, num_heads=4, num_layers=2, batch_size=16, remat=False,
    remat_policy="full",
):  # fmt: skip
    """Causal pre-LN Transformer LM on the standard-library character corpus."""
    corpus = stdlib_corpus()
    net = Functional(
        lambda rngs: TransformerLM(
            corpus.vocab_size, seq_len, d_model=d_model, num_heads=num_heads,
            num_layers=num_layers, remat=remat, remat_policy=remat_policy, rngs=rngs,
        )
    )  # fmt: skip
    return LanguageModelTask("text_transformer", net, corpus, seq_len, batch_size)


TASKS: dict[str, Callable] = {
    fn.__name__: fn
    for fn in (
        quadratic,
        rosenbrock,
        logistic,
        regression_mlp,
        digits_mlp,
        digits_cnn,
        digits_resmlp,
        mnist1d_mlp,
        mnist1d_cnn,
        text_transformer,
    )
}


def list_tasks() -> list[str]:
    """Names accepted by `get_task`, sorted."""
    return sorted(TASKS)


def task_defaults(name: str) -> dict:
    """The keyword overrides `get_task(name, ...)` accepts, with their default values."""
    factory = _lookup(TASKS, name, "task")
    return {p.name: p.default for p in inspect.signature(factory).parameters.values()}


def get_task(name: str, **overrides):
    """The named task with `overrides` applied; unknown names or override keys raise ValueError."""
    factory = _lookup(TASKS, name, "task")
    valid = task_defaults(name)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"task {name!r} has no option(s) {unknown}; valid options (with defaults): {valid}"
        )
    return factory(**overrides)


def list_families() -> list[str]:
    """Names accepted by `get_family`, sorted."""
    return sorted(FAMILIES)


@functools.cache
def get_family(name: str):
    """The named TaskFamily (one shared instance per name)."""
    return _lookup(FAMILIES, name, "family")()


def heldout_tasks(family_name: str, n: int, seed: int = 0) -> list:
    """`n` tasks from the family's fixed held-out subset, reproducible from `seed`."""
    family = get_family(family_name)
    keys = jax.random.split(jax.random.key(seed), n)
    return [family.sample(key, "heldout") for key in keys]


def ood_suite() -> list[tuple[str, object]]:
    """Out-of-distribution tasks for evaluation only: no family samples any of them.

    Wider and deeper MLPs than any family's groups, other architectures (CNNs, residual MLP),
    a non-quadratic synthetic problem, logistic regression (linear model) and the transformer LM.
    """
    suite = [
        ("digits_mlp_wide", get_task("digits_mlp", hidden=(512,))),
        ("digits_mlp_deep", get_task("digits_mlp", hidden=(64,) * 5)),
        ("digits_cnn", get_task("digits_cnn")),
        ("digits_resmlp", get_task("digits_resmlp")),
        ("mnist1d_cnn", get_task("mnist1d_cnn")),
        ("logistic", get_task("logistic")),
        ("rosenbrock", get_task("rosenbrock")),
    ]
    suite.append(("text_transformer", get_task("text_transformer")))
    return suite


def _lookup(table: dict, name: str, kind: str):
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid {kind} names: {sorted(table)}")
    return table[name]
