"""Every task of the zoo checks its size arguments up front: a bad width, depth, batch size, ...
is a ValueError naming the argument, raised before anything is built or compiled."""

import re

import jax
import pytest

import models
from models import task_sizes

NOT_SIZES = {"seed"}  # integer arguments that are not sizes


def _size_arguments(name):
    """Arguments whose default is an int or a tuple of ints: found from the signatures, so a new
    task or argument is covered without editing this test."""
    sizes = {}
    for arg, default in models.task_defaults(name).items():
        is_int = isinstance(default, int) and not isinstance(default, bool)
        is_ints = isinstance(default, tuple) and all(isinstance(v, int) for v in default)
        if arg not in NOT_SIZES and (is_int or is_ints):
            sizes[arg] = default
    return sizes


BAD_VALUES = {int: (0, -2, 2.5), tuple: ((0,), (8, -1), 64)}
CASES = [
    pytest.param(name, arg, bad, id=f"{name}-{arg}={bad!r}")
    for name in models.list_tasks()
    for arg, default in _size_arguments(name).items()
    for bad in BAD_VALUES[type(default)]
]


def test_every_task_has_size_arguments_and_the_table_knows_them():
    for name in models.list_tasks():
        sizes = _size_arguments(name)
        assert sizes, name
        assert set(sizes) <= set(task_sizes.SIZE_ARGUMENTS), (name, sizes)


@pytest.fixture
def compile_events():
    events = []
    listener = lambda event, *args, **kwargs: "compile" in event and events.append(event)
    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("name,arg,bad", CASES)
def test_bad_size_argument_is_a_value_error_naming_it(name, arg, bad, compile_events):
    with pytest.raises(ValueError, match=rf"\b{arg}\b .*got {re.escape(repr(bad))}"):
        models.get_task(name, **{arg: bad})
    assert compile_events == [], compile_events


def test_channels_need_a_layer_and_hidden_may_be_empty():
    with pytest.raises(ValueError, match="channels needs at least one layer"):
        models.get_task("digits_cnn", channels=())
    linear = models.get_task("digits_mlp", hidden=()).net.param_shapes()
    assert linear["readout"]["kernel"].shape == (64, 10)
