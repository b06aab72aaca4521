"""Bagging: members see different bootstrap samples; the ensemble is the members' average."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from modeldev_fakes import adam_trainer, id_task, tiny_task

from experiments.evaluation import predictions
from experiments.modeldev import bagging, combine, members


def test_resampled_task_draws_only_its_rows():
    task = id_task()
    rows = jnp.asarray([3, 3, 7, 11, 20])
    member = members.ResampledTask(task, rows)
    drawn = set()
    for i in range(6):
        batch = member.sample_batch(jax.random.key(i), "train")
        drawn |= set(np.asarray(batch["x"][:, 0]).astype(int).tolist())
    assert drawn == {3, 7, 11, 20}
    # num_used keeps only the first rows; weights pick rows by probability.
    first = members.ResampledTask(task, rows, num_used=2)
    assert set(np.asarray(first.sample_batch(jax.random.key(0))["x"][:, 0]).astype(int)) == {3}
    weighted = members.ResampledTask(task, rows, weights=jnp.asarray([0, 0, 0, 1.0, 0]))
    assert set(np.asarray(weighted.sample_batch(jax.random.key(0))["x"][:, 0]).astype(int)) \
        == {11}
    # other splits are the wrapped task's
    np.testing.assert_array_equal(member.full_split("test")["y"], task.full_split("test")["y"])


def test_bootstrap_members_differ_and_resample_with_replacement():
    indices = np.asarray(members.bootstrap_indices(jax.random.key(0), 200, 4))
    assert indices.shape == (4, 200)
    for member in indices:
        # with replacement: about 1 - 1/e of the rows are distinct, never all of them
        assert 0.55 < len(np.unique(member)) / 200 < 0.75
    assert not np.array_equal(indices[0], indices[1])


def test_bagging_average_equals_members_averaged_predictions():
    task = tiny_task()
    bagged = bagging.train_bagging(task, adam_trainer(), jnp.float32(1e-2), num_members=3,
                                   seed=0)
    rows = np.asarray(bagged.indices)
    assert rows.shape == (3, members.num_train(task))
    assert not np.array_equal(np.sort(rows[0]), np.sort(rows[1]))
    probs_MNC = members.member_outputs(task, bagged.params, "test")
    x_test = task.full_split("test")["x"]
    one_by_one = []
    for m in range(3):
        params = jax.tree.map(lambda leaf, m=m: leaf[m], bagged.params)
        one_by_one.append(predictions.outputs_to_probs(task.net.apply(params, x_test)))
    np.testing.assert_allclose(combine.average_probs(probs_MNC), np.mean(one_by_one, axis=0),
                               atol=1e-5)
    # members are different networks (different rows, init and batches)
    assert np.abs(probs_MNC[0] - probs_MNC[1]).max() > 1e-3
    # trained: better than chance on test
    labels = np.asarray(task.full_split("test")["y"])
    assert (combine.average_probs(probs_MNC).argmax(1) == labels).mean() > 0.3


def test_majority_vote_and_mean():
    probs = np.asarray([[[0.9, 0.1], [0.2, 0.8]],
                        [[0.6, 0.4], [0.7, 0.3]],
                        [[0.1, 0.9], [0.4, 0.6]]])
    np.testing.assert_array_equal(combine.majority_vote(probs), [0, 1])
    np.testing.assert_allclose(combine.vote_probs(probs), [[2 / 3, 1 / 3], [1 / 3, 2 / 3]])
    # a 1-1 tie goes to the lowest class
    np.testing.assert_array_equal(combine.majority_vote(probs[:2]), [0, 0])
    np.testing.assert_allclose(combine.mean_prediction(np.ones((2, 3, 1)) * [[[1]], [[3]]]),
                               np.full((3, 1), 2.0))


def test_bad_inputs_are_value_errors():
    with pytest.raises(ValueError, match="at least 2 members"):
        combine.average_probs(np.ones((1, 4, 3)) / 3)
    with pytest.raises(ValueError, match="one shape"):
        combine.average_probs([np.ones((4, 3)) / 3, np.ones((5, 3)) / 3])
    with pytest.raises(ValueError, match="num_members"):
        bagging.train_bagging(tiny_task(), adam_trainer(), jnp.float32(1e-2), num_members=1)
