"""Named tasks: they learn with Adam, models overfit one batch, seeds, jit, errors, baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from learned_opt.tasks import Task
from models.debugging import overfit_one_batch, train_with_adam

# Adam learning rate, steps, and the fraction of the initial valid loss to get below: a
# sensible fixed setting per task, not tuned per seed. Logistic regression's floor is the Bayes
# loss of its noisy labels (about 0.3 nats), so it cannot halve its initial loss.
ADAM_SETTINGS = {
    "quadratic": (0.05, 300, 0.5),
    "rosenbrock": (0.02, 300, 0.5),
    "logistic": (0.02, 300, 0.7),
    "regression_mlp": (3e-3, 300, 0.5),
    "digits_mlp": (3e-3, 300, 0.5),
    "digits_cnn": (1e-2, 150, 0.5),
    "digits_resmlp": (3e-3, 300, 0.5),
    "mnist1d_mlp": (3e-3, 300, 0.7),
    "mnist1d_cnn": (1e-2, 150, 0.6),
}
# Tasks whose model is a neural network (and so can overfit one batch).
NETWORK_TASKS = [
    "regression_mlp",
    "digits_mlp",
    "digits_cnn",
    "digits_resmlp",
    "mnist1d_mlp",
    "mnist1d_cnn",
]


def test_every_named_task_has_an_adam_setting():
    assert set(ADAM_SETTINGS) <= set(models.list_tasks())
    assert set(models.list_tasks()) - set(ADAM_SETTINGS) <= {"text_transformer"}


SLOW_TASKS = {"digits_cnn", "mnist1d_cnn"}  # CPU convolutions: ~10 s each


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TASKS else n
        for n in sorted(ADAM_SETTINGS)
    ],
)
def test_named_task_learns_with_adam_and_its_model_overfits_one_batch(name):
    """Both checks run on the library's training loop (see models.debugging)."""
    task = models.get_task(name)
    assert isinstance(task, Task)
    learning_rate, steps, fraction = ADAM_SETTINGS[name]
    result = train_with_adam(task, jax.random.key(0), steps=steps, learning_rate=learning_rate)
    assert np.all(np.isfinite(result.train_losses))
    # Measured on a valid batch, which training never sees.
    assert result.final_loss < fraction * result.initial_loss, result[:2]
    if name in NETWORK_TASKS:
        one = overfit_one_batch(task, jax.random.key(1), steps=steps, learning_rate=1e-2)
        assert one.final_loss < 0.02 * one.initial_loss + 1e-3, one[:2]


def _tree_equal(a, b):
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


def _init_batch_loss(task):
    def run(key):
        params, batch = task.init(key), task.sample_batch(key, "train")
        return params, batch, task.loss(params, batch)

    return jax.jit(run)


@pytest.mark.parametrize("name", ["digits_mlp", "quadratic"])
def test_same_seed_same_everything_different_seed_differs(name):
    run = _init_batch_loss(models.get_task(name))
    run_again = _init_batch_loss(models.get_task(name))
    k0, k1 = jax.random.key(0), jax.random.key(1)
    assert _tree_equal(run(k0), run_again(k0))  # params, batch and loss, from fresh tasks
    params0, batch0, _ = run(k0)
    params1, batch1, _ = run(k1)
    assert not _tree_equal(params0, params1)
    assert not _tree_equal(batch0, batch1)


def test_batches_are_sampled_inside_jit_without_host_transfers():
    task = models.get_task("digits_mlp", batch_size=32)
    params = task.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 4)

    @jax.jit
    def mean_loss(params, keys):
        batches = jax.vmap(lambda k: task.sample_batch(k, "train"))(keys)
        return jax.vmap(task.loss, in_axes=(None, 0))(params, batches).mean()

    mean_loss(params, keys)  # compile first: constants move to the device once
    with jax.transfer_guard("disallow"):
        loss = mean_loss(params, keys)
    one_loss = jax.jit(lambda params, key: task.loss(params, task.sample_batch(key, "train")))
    expected = np.mean([one_loss(params, k) for k in keys])
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_get_task_overrides_change_the_task_and_unknown_keys_are_rejected():
    task = models.get_task("digits_mlp", hidden=(64, 64), batch_size=128)
    params = task.net.param_shapes()
    assert params["hidden_layers"][1]["kernel"].shape == (64, 64)
    batch = jax.eval_shape(lambda key: task.sample_batch(key, "train"), jax.random.key(0))
    assert batch["x"].shape[0] == 128
    with pytest.raises(ValueError, match=r"no option\(s\) \['hiden'\].*hidden"):
        models.get_task("digits_mlp", hiden=(3,))


def test_unknown_task_family_and_split_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task 'digits_mlpp'.*digits_mlp"):
        models.get_task("digits_mlpp")
    with pytest.raises(ValueError, match="unknown family 'cifar'.*quadratic"):
        models.get_family("cifar")
    with pytest.raises(ValueError, match="unknown split 'validation'.*valid"):
        models.get_task("quadratic").sample_batch(jax.random.key(0), "validation")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        models.get_task("digits_mlp", batch_size=0)
    with pytest.raises(ValueError, match="unknown activation 'sigmoidd'"):
        models.get_task("digits_mlp", activation="sigmoidd")


@pytest.mark.parametrize("name", ["digits_mlp", "mnist1d_mlp", "logistic"])
def test_classification_tasks_report_accuracy_and_test_baselines(name):
    task = models.get_task(name)
    info = task.dataset_info()
    test_labels = np.asarray(task.full_split("test")["y"])
    train_labels = np.asarray(task.full_split("train")["y"])
    num_classes = info["num_classes"]
    assert info["random_guess_accuracy"] == pytest.approx(1 / num_classes)
    majority = np.bincount(train_labels, minlength=num_classes).argmax()
    assert info["zero_rule_accuracy"] == pytest.approx(np.mean(test_labels == majority))
    assert set(info["split_sizes"]) == {"train", "valid", "test"}
    assert len(info["fingerprint"]) == 16
    metrics = jax.jit(task.metrics)(task.init(jax.random.key(0)), task.full_split("test"))
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0 and np.isfinite(metrics["loss"])


def test_quadratic_eval_splits_are_the_exact_objective_with_minimum_at_x_star():
    task = models.get_task("quadratic", dim=8)
    exact = task.sample_batch(jax.random.key(0), "test")
    assert float(task.loss({"x": task.x_star}, exact)) == pytest.approx(0.0, abs=1e-6)
    noisy = task.sample_batch(jax.random.key(0), "train")
    assert float(task.loss({"x": task.x_star}, noisy)) > 0.0
    # Gradient matches the closed form A (x - x_star) with A = Q^T diag(lambda) Q.
    x = task.init(jax.random.key(2))
    a = task.rotation.T @ jnp.diag(task.eigenvalues) @ task.rotation
    grad = jax.jit(jax.grad(task.loss))(x, exact)["x"]
    np.testing.assert_allclose(grad, a @ (x["x"] - task.x_star), rtol=1e-4, atol=1e-4)
