"""Task families: fixed meta-train / held-out split, vmappable populations, dynamic knobs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from learned_opt.tasks import Task, TaskFamily
from models.families import MLP_RANGES, QUADRATIC_RANGES
from models.synthetic import QuadraticTask


@pytest.mark.parametrize("name", models.list_families())
def test_family_split_is_fixed_and_disjoint(name):
    family = models.get_family(name)
    assert isinstance(family, TaskFamily)
    meta_train, heldout = family.groups("meta_train"), family.groups("heldout")
    assert meta_train and heldout
    shapes = lambda groups: {g._replace(subset=None) for g in groups}
    assert not shapes(meta_train) & shapes(heldout)
    keys = jax.random.split(jax.random.key(0), 8)
    assert all(family.sample_group(k, "meta_train") in meta_train for k in keys)
    assert all(family.sample_group(k, "heldout") in heldout for k in keys)
    with pytest.raises(ValueError, match="unknown subset 'test'.*meta_train"):
        family.sample_group(keys[0], "test")
    with pytest.raises(TypeError, match="expects a"):
        family.sample_task_params(keys[0], ("not", "a", "group"))


@pytest.mark.parametrize(
    "name, ranges, knob",
    [("quadratic", QUADRATIC_RANGES, "log10_condition"), ("digits_mlp", MLP_RANGES, "init_scale")],
)
def test_heldout_dynamic_params_come_from_a_disjoint_range(name, ranges, knob):
    family = models.get_family(name)
    keys = jax.random.split(jax.random.key(1), 64)
    for subset in ("meta_train", "heldout"):
        group = family.groups(subset)[0]
        values = jax.vmap(lambda k, g=group: family.sample_task_params(k, g))(keys)[knob]
        low, high = ranges[subset][knob]
        assert np.all((values >= low - 1e-5) & (values <= high + 1e-5)), (subset, values)
    assert ranges["meta_train"][knob][1] <= ranges["heldout"][knob][0]


@pytest.mark.parametrize("name", [pytest.param("digits_mlp", marks=pytest.mark.slow), "quadratic"])
def test_a_population_of_one_group_vmaps_inside_jit_and_matches_per_task_loop(name):
    family = models.get_family(name)
    group = family.groups("meta_train")[0]
    keys = jax.random.split(jax.random.key(2), 4)
    task_params = jax.vmap(lambda k: family.sample_task_params(k, group))(keys)

    def init_and_loss(task_params, key):
        task = family.make_task(group, task_params)
        init_key, batch_key = jax.random.split(key)
        params = task.init(init_key)
        return task.loss(params, task.sample_batch(batch_key, "train"))

    population_losses = jax.jit(jax.vmap(init_and_loss))
    population_losses(task_params, keys)  # compile; constants reach the device once
    with jax.transfer_guard("disallow"):
        losses = population_losses(task_params, keys)
    one = jax.jit(init_and_loss)
    expected = [one(jax.tree.map(lambda x, i=i: x[i], task_params), keys[i]) for i in range(4)]
    np.testing.assert_allclose(losses, expected, rtol=1e-4)
    assert len(set(np.round(np.asarray(losses), 4).tolist())) == 4  # the tasks differ


def test_family_sample_is_reproducible_and_returns_a_task():
    family = models.get_family("digits_mlp")
    a, b = family.sample(jax.random.key(3)), family.sample(jax.random.key(3))
    assert isinstance(a, Task) and a.name == b.name
    batch = a.sample_batch(jax.random.key(0), "train")
    assert jnp.array_equal(batch["y"], b.sample_batch(jax.random.key(0), "train")["y"])


def test_label_noise_and_data_fraction_change_what_train_batches_contain():
    family = models.get_family("digits_mlp")
    group = family.groups("meta_train")[0]
    params = family.sample_task_params(jax.random.key(4), group)
    noisy = family.make_task(group, {**params, "label_noise": jnp.array(0.5)})
    clean_labels = noisy.data.y_train
    flipped = float(jnp.mean(noisy._train_labels != clean_labels))
    assert 0.35 < flipped < 0.55  # half are redrawn, 1/10 of those land on the true class
    assert jnp.array_equal(noisy.full_split("valid")["y"], noisy.data.y_valid)  # only train
    small = family.make_task(group, {**params, "data_fraction": jnp.array(0.05)})
    draws = jax.jit(jax.vmap(lambda k: small.sample_batch(k, "train")["x"]))(
        jax.random.split(jax.random.key(5), 20)
    )
    rows = np.unique(np.asarray(draws).reshape(-1, 64), axis=0)
    assert len(rows) <= round(0.05 * clean_labels.shape[0])


def test_heldout_tasks_and_ood_suite():
    tasks = models.heldout_tasks("quadratic", n=3, seed=0)
    again = models.heldout_tasks("quadratic", n=3, seed=0)
    assert len(tasks) == 3 and [t.name for t in tasks] == [t.name for t in again]
    heldout_dims = {g.dim for g in models.get_family("quadratic").groups("heldout")}
    assert all(t.dim in heldout_dims for t in tasks)
    suite = models.ood_suite()
    names = [name for name, _ in suite]
    assert len(set(names)) == len(names) and all(isinstance(t, Task) for _, t in suite)
    assert {"digits_mlp_wide", "digits_mlp_deep", "mnist1d_cnn"} <= set(names)


def test_precomputed_task_draws_build_the_same_task_and_wrong_shapes_fail():
    """A task family draws the subset order and label-noise draws once, with the task
    parameters: the task built from them is the task its keys give."""
    family = models.get_family("digits_mlp")
    group = family.groups("meta_train")[0]
    params = family.sample_task_params(jax.random.key(7), group)
    from_draws = family.make_task(group, params)
    keys_only = {k: v for k, v in params.items() if k not in ("train_order", "label_draws")}
    from_keys = family.make_task(group, keys_only)
    assert jnp.array_equal(from_draws._train_labels, from_keys._train_labels)
    assert jnp.array_equal(from_draws._train_order, from_keys._train_order)
    batch = lambda task: task.sample_batch(jax.random.key(1), "train")
    assert jnp.array_equal(batch(from_draws)["x"], batch(from_keys)["x"])
    with pytest.raises(ValueError, match="train_order must have shape"):
        family.make_task(group, {**params, "train_order": params["train_order"][:5]})


def test_cnn_family_builds_cnns_and_never_samples_the_ood_suites_cnn():
    family = models.get_family("digits_cnn")
    group = family.groups("meta_train")[0]
    task = family.make_task(group, family.sample_task_params(jax.random.key(8), group))
    params = task.init(jax.random.key(0))
    kernels = [p for p in jax.tree.leaves(params) if p.ndim == 4]
    assert len(kernels) == len(group.hidden) and kernels[0].shape == (3, 3, 1, group.hidden[0])
    loss = task.loss(params, task.sample_batch(jax.random.key(1), "train"))
    assert np.isfinite(float(loss)) and task.name.startswith("digits_cnn_")
    ood = models.get_task("digits_cnn")  # channels (8, 16), relu, batch 64
    every = family.groups("meta_train") + family.groups("heldout")
    assert all((g.hidden, g.activation, g.batch_size) != ((8, 16), "relu", ood.batch_size)
               for g in every)


def test_quadratic_rotation_drawn_once_with_the_task_parameters():
    """The family precomputes each task's rotation in `sample_task_params` (not at every
    make_task); the task it builds is the one computed from `data_key` alone."""
    family = models.get_family("quadratic")
    group = family.groups("meta_train")[0]
    params = family.sample_task_params(jax.random.key(5), group)
    assert params["rotation"].shape == (group.dim, group.dim)
    built = family.make_task(group, params)
    fresh = QuadraticTask(group.dim, log10_condition=params["log10_condition"],
                          noise_std=params["noise_std"], init_scale=params["init_scale"],
                          batch_size=group.batch_size, data_key=params["data_key"])
    np.testing.assert_array_equal(np.asarray(built.rotation), np.asarray(fresh.rotation))
    np.testing.assert_array_equal(np.asarray(built.x_star), np.asarray(fresh.x_star))
    q = np.asarray(fresh.rotation)
    np.testing.assert_allclose(q @ q.T, np.eye(group.dim), atol=1e-5)
    with pytest.raises(ValueError, match="rotation must have shape"):
        QuadraticTask(group.dim, rotation=jnp.eye(group.dim + 1))
