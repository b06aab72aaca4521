"""Task families: distributions over tasks, split into static shape groups and dynamic arrays.

A group (a hashable NamedTuple) fixes every shape: width, depth, activation, batch size, and
which subset ("meta_train" or "heldout") it belongs to. Task parameters (a dict of arrays:
init scale, label noise, data-subset fraction, keys) vary within a group and can be vmapped:

    family = get_family("digits_mlp")
    group = family.sample_group(jax.random.key(0), "meta_train")
    task_params = jax.vmap(lambda k: family.sample_task_params(k, group))(keys)
    losses = jax.vmap(lambda tp, p, b: family.make_task(group, tp).loss(p, b))(task_params, ...)

The meta-train / held-out split is fixed and documented per family (`HELDOUT_*` below):
held-out groups use shapes or activations that no meta-train group uses, AND their dynamic
parameters come from ranges disjoint from the meta-train ranges. `family.groups(subset)` lists
every group of a subset, so the split can be inspected and reported.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from learned_opt.tasks import check_subset
from models import datasets
from models.nets import CNN, MLP, Functional
from models.synthetic import QuadraticTask, quadratic_rotation
from models.tasks import SupervisedTask, label_noise_draws, subset_order


class QuadraticGroup(NamedTuple):
    dim: int
    batch_size: int
    subset: str


class MLPGroup(NamedTuple):
    """One shape group of a network family: `hidden` is the MLP's widths, or the CNN's
    channels for a family whose spec has net="cnn"."""

    hidden: tuple[int, ...]
    activation: str
    batch_size: int
    subset: str


def _uniform(key, bounds) -> jax.Array:
    low, high = bounds
    return jax.random.uniform(key, (), minval=low, maxval=high)


def _log_uniform(key, bounds) -> jax.Array:
    low, high = bounds
    return jnp.exp(jax.random.uniform(key, (), minval=jnp.log(low), maxval=jnp.log(high)))


class _FamilyBase:
    """Shared group sampling: uniform over the fixed list of groups of a subset."""

    name: str

    def groups(self, subset: str = "meta_train") -> tuple:
        raise NotImplementedError

    def sample_group(self, key: jax.Array, subset: str = "meta_train"):
        """A group of `subset`, uniformly from `groups(subset)`. Host-side: not for jit."""
        check_subset(subset)
        choices = self.groups(subset)
        return choices[int(jax.random.randint(key, (), 0, len(choices)))]

    def sample(self, key: jax.Array, subset: str = "meta_train"):
        """A task of `subset`: group, then task parameters, then the task."""
        group_key, params_key = jax.random.split(key)
        group = self.sample_group(group_key, subset)
        return self.make_task(group, self.sample_task_params(params_key, group))

    def _check_group(self, group, group_type) -> None:
        if not isinstance(group, group_type):
            raise TypeError(
                f"family {self.name!r} expects a {group_type.__name__} group "
                f"(from sample_group or groups()); got {group!r}"
            )


# --- quadratic ---------------------------------------------------------------------------
QUADRATIC_DIMS = {"meta_train": (8, 16, 32), "heldout": (24, 64)}
QUADRATIC_BATCH_SIZES = (4, 16)
QUADRATIC_RANGES = {
    "meta_train": dict(log10_condition=(0.0, 2.0), noise_std=(0.0, 0.3), init_scale=(0.5, 2.0)),
    "heldout": dict(log10_condition=(2.0, 3.0), noise_std=(0.3, 0.5), init_scale=(0.5, 2.0)),
}


class QuadraticFamily(_FamilyBase):
    """Noisy, rotated, ill-conditioned quadratics (`models.synthetic.QuadraticTask`).

    Split: meta_train dims {8, 16, 32}, condition numbers 10^[0, 2], noise std [0, 0.3];
    heldout dims {24, 64}, condition numbers 10^[2, 3], noise std [0.3, 0.5].
    Batch sizes {4, 16} and init scales log-uniform in [0.5, 2] in both.
    """

    name = "quadratic"

    def groups(self, subset: str = "meta_train") -> tuple[QuadraticGroup, ...]:
        check_subset(subset)
        return tuple(
            QuadraticGroup(d, b, subset)
            for d, b in itertools.product(QUADRATIC_DIMS[subset], QUADRATIC_BATCH_SIZES)
        )

    def sample_task_params(self, key: jax.Array, group: QuadraticGroup) -> dict:
        self._check_group(group, QuadraticGroup)
        ranges = QUADRATIC_RANGES[group.subset]
        k_cond, k_noise, k_scale, k_data = jax.random.split(key, 4)
        return {
            "log10_condition": _uniform(k_cond, ranges["log10_condition"]),
            "noise_std": _uniform(k_noise, ranges["noise_std"]),
            "init_scale": _log_uniform(k_scale, ranges["init_scale"]),
            "data_key": k_data,
            # Drawn once per task here, not in make_task (called at every meta-training step).
            "rotation": quadratic_rotation(k_data, group.dim),
        }

    def make_task(self, group: QuadraticGroup, task_params: dict) -> QuadraticTask:
        self._check_group(group, QuadraticGroup)
        return QuadraticTask(
            group.dim,
            log10_condition=task_params["log10_condition"],
            noise_std=task_params["noise_std"],
            init_scale=task_params["init_scale"],
            batch_size=group.batch_size,
            data_key=task_params["data_key"],
            rotation=task_params.get("rotation"),
            name=f"quadratic_d{group.dim}_b{group.batch_size}",
        )


# --- MLPs on a dataset -------------------------------------------------------------------
@functools.cache
def mlp_net(in_features: int, hidden: tuple[int, ...], out_features: int, activation: str):
    """A cached functional MLP (building the abstract module once per shape)."""
    return Functional(
        lambda rngs: MLP(in_features, hidden, out_features, activation=activation, rngs=rngs)
    )


@functools.cache
def cnn_net(input_shape: tuple[int, ...], channels: tuple[int, ...], out_features: int,
            activation: str):
    """A cached functional CNN (`models.nets.CNN`: 3x3 convs, stride 2 after the first)."""
    return Functional(
        lambda rngs: CNN(input_shape, channels, out_features, activation=activation, rngs=rngs)
    )


class MLPFamilySpec(NamedTuple):
    """What distinguishes one network family from another: its dataset, its network kind
    (`net`: "mlp", or "cnn" on inputs reshaped to `input_shape`), and its split of shapes
    (widths, or CNN channels) and activations."""

    name: str
    dataset: str  # "digits", "mnist1d" or "regression"
    meta_train_hidden: tuple[tuple[int, ...], ...]
    heldout_hidden: tuple[tuple[int, ...], ...]
    meta_train_activations: tuple[str, ...]
    heldout_activations: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    net: str = "mlp"
    input_shape: tuple[int, ...] = ()  # the CNN's (H, W, C) or (L, C); unused by an MLP


# Dynamic ranges shared by the MLP families: disjoint init-scale and label-noise ranges.
MLP_RANGES = {
    "meta_train": dict(init_scale=(0.5, 1.5), label_noise=(0.0, 0.1), data_fraction=(0.5, 1.0)),
    "heldout": dict(init_scale=(1.5, 2.5), label_noise=(0.1, 0.2), data_fraction=(0.5, 1.0)),
}

MLP_FAMILY_SPECS = {
    spec.name: spec
    for spec in (
        MLPFamilySpec(
            "regression_mlp", "regression",
            meta_train_hidden=((32,), (32, 32), (64,)), heldout_hidden=((128,), (32, 32, 32)),
            meta_train_activations=("relu", "tanh"), heldout_activations=("gelu",),
            batch_sizes=(32, 64, 128),
        ),
        MLPFamilySpec(
            "digits_mlp", "digits",
            meta_train_hidden=((32,), (64,), (32, 32)), heldout_hidden=((128,), (64, 64, 64)),
            meta_train_activations=("relu", "tanh"), heldout_activations=("gelu",),
            batch_sizes=(32, 128),
        ),
        MLPFamilySpec(
            "mnist1d_mlp", "mnist1d",
            meta_train_hidden=((64,), (100,), (64, 64)), heldout_hidden=((256,), (100, 100, 100)),
            meta_train_activations=("relu", "tanh"), heldout_activations=("gelu",),
            batch_sizes=(32, 128),
        ),
        # 2-D CNNs on 8x8 digits. The OOD suite's digits_cnn (channels (8, 16), batch 64) is
        # no group's shape: it lies between the meta-train and held-out channel counts.
        MLPFamilySpec(
            "digits_cnn", "digits",
            meta_train_hidden=((4, 8), (8, 8), (16,)), heldout_hidden=((16, 16), (8, 16, 32)),
            meta_train_activations=("relu", "tanh"), heldout_activations=("gelu",),
            batch_sizes=(32, 128), net="cnn", input_shape=(8, 8, 1),
        ),
    )
}  # fmt: skip


def _family_dataset(kind: str) -> datasets.ArrayDataset:
    if kind == "regression":
        return datasets.synthetic_regression()
    return datasets.get_dataset(kind)


class MLPFamily(_FamilyBase):
    """MLPs (or CNNs: spec.net="cnn", `hidden` = channels) on one dataset, varying width,
    depth, activation, batch size, init, labels and data.

    Split (per `MLPFamilySpec`): meta_train groups use `meta_train_hidden` x
    `meta_train_activations`; heldout groups are every group with a `heldout_hidden` shape or a
    `heldout_activations` activation (so no heldout group is a meta_train group). Dynamic
    parameters: init scale log-uniform [0.5, 1.5] (meta_train) / [1.5, 2.5] (heldout); label
    noise [0, 0.1] / [0.1, 0.2] (classification only); data fraction [0.5, 1] in both.
    """

    def __init__(self, spec: MLPFamilySpec):
        self.spec = spec
        self.name = spec.name

    def groups(self, subset: str = "meta_train") -> tuple[MLPGroup, ...]:
        check_subset(subset)
        spec = self.spec
        if subset == "meta_train":
            shapes = itertools.product(spec.meta_train_hidden, spec.meta_train_activations)
        else:
            all_activations = spec.meta_train_activations + spec.heldout_activations
            shapes = itertools.chain(
                itertools.product(spec.heldout_hidden, all_activations),
                itertools.product(spec.meta_train_hidden, spec.heldout_activations),
            )
        return tuple(
            MLPGroup(hidden, act, batch, subset)
            for (hidden, act), batch in itertools.product(list(shapes), spec.batch_sizes)
        )

    @property
    def data(self) -> datasets.ArrayDataset:
        return _family_dataset(self.spec.dataset)

    def sample_task_params(self, key: jax.Array, group: MLPGroup) -> dict:
        self._check_group(group, MLPGroup)
        ranges = MLP_RANGES[group.subset]
        k_scale, k_noise, k_fraction, k_noise_key, k_subset_key = jax.random.split(key, 5)
        label_noise = _uniform(k_noise, ranges["label_noise"])
        data = self.data
        params = {
            "init_scale": _log_uniform(k_scale, ranges["init_scale"]),
            "label_noise": label_noise,
            "data_fraction": _uniform(k_fraction, ranges["data_fraction"]),
            "noise_key": k_noise_key,
            "subset_key": k_subset_key,
            # Drawn once per task here, not in make_task (called at every meta-training step).
            "train_order": subset_order(k_subset_key, data.x_train.shape[0]),
        }
        if self.spec.dataset == "regression":
            params["label_noise"] = jnp.zeros(())
        else:
            params["label_draws"] = label_noise_draws(k_noise_key, data)
        return params

    def make_task(self, group: MLPGroup, task_params: dict) -> SupervisedTask:
        self._check_group(group, MLPGroup)
        data = self.data
        in_features = math.prod(data.x_train.shape[1:])
        regression = data.num_classes == 0
        out_features = data.y_train.shape[-1] if regression else data.num_classes
        if self.spec.net == "cnn":
            net = cnn_net(self.spec.input_shape, tuple(group.hidden), out_features,
                          group.activation)
        else:
            net = mlp_net(in_features, tuple(group.hidden), out_features, group.activation)
        widths = "x".join(map(str, group.hidden))
        return SupervisedTask(
            f"{self.name}_{widths}_{group.activation}_b{group.batch_size}",
            net,
            data,
            group.batch_size,
            loss_kind="mse" if regression else "softmax",
            init_scale=task_params["init_scale"],
            label_noise=0.0 if regression else task_params["label_noise"],
            data_fraction=task_params["data_fraction"],
            noise_key=task_params["noise_key"],
            subset_key=task_params["subset_key"],
            label_draws=task_params.get("label_draws"),
            train_order=task_params.get("train_order"),
        )


FAMILIES = {
    "quadratic": QuadraticFamily,
    **{name: functools.partial(MLPFamily, spec) for name, spec in MLP_FAMILY_SPECS.items()},
}
