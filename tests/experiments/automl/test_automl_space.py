"""The declarative search space: validation, conditional suggestion, grids, narrowing."""

import optuna
import pytest

from experiments.automl.space import (
    Categorical,
    Float,
    Int,
    SearchSpace,
    at_edge,
    narrow,
)


def conditional_space():
    return SearchSpace({
        "optimizer": Categorical(("adam", "sgd")),
        "learning_rate": Float(1e-4, 1e-1, log=True),
        "momentum": Float(0.0, 0.99, when={"optimizer": ("sgd",)}),
        "depth": Int(1, 3),
    })


@pytest.mark.parametrize("build, match", [
    (lambda: SearchSpace({}), "empty"),
    (lambda: SearchSpace.from_dict({}), "empty"),
    (lambda: Float(1.0, 0.5), "low < high"),
    (lambda: Float(0.0, 1.0, log=True), "low > 0"),
    (lambda: Int(3, 1), "low <= high"),
    (lambda: Categorical(()), "non-empty"),
    (lambda: Categorical(("a", "a")), "repeat"),
    (lambda: Float(0.0, 1.0, grid=(2.0,)), "inside"),
    (lambda: SearchSpace({"x": Float(0, 1, when={"y": ("a",)}), "y": Categorical(("a",))}),
     "not an earlier parameter"),
    (lambda: SearchSpace({"y": Categorical(("a", "b")), "x": Float(0, 1, when={"y": ("c",)})}),
     "can never hold"),
    (lambda: SearchSpace({"x": (0, 1)}), "Float, Int or Categorical"),
    (lambda: SearchSpace.from_dict({"x": {"type": "real", "low": 0, "high": 1}}), "type"),
    (lambda: SearchSpace.from_dict({"x": {"type": "float", "lo": 0, "high": 1}}), "unknown keys"),
])
def test_empty_or_contradictory_spaces_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_conditional_parameter_only_when_its_condition_holds():
    space = conditional_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    study.optimize(lambda t: (seen.append(space.suggest(t)), 0.0)[1], n_trials=30)
    assert {p["optimizer"] for p in seen} == {"adam", "sgd"}
    for params in seen:
        assert ("momentum" in params) == (params["optimizer"] == "sgd")
        assert 1e-4 <= params["learning_rate"] <= 1e-1 and params["depth"] in (1, 2, 3)


def test_grid_and_from_dict_round_trip():
    space = SearchSpace.from_dict({
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "width": {"type": "int", "low": 8, "high": 64, "step": 8},
        "act": {"type": "categorical", "choices": ["relu", "tanh"]},
    })
    grid = space.grid(points=4)
    assert grid["learning_rate"] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    assert grid["width"] == [8, 24, 48, 64] and grid["act"] == ["relu", "tanh"]
    assert space.grid_size(4) == 32 == len(space.grid_points(4))
    assert SearchSpace.from_dict(space.to_dict()).digest() == space.digest()
    with pytest.raises(ValueError, match="conditional"):
        conditional_space().grid()


def test_digest_changes_with_the_space():
    a = SearchSpace({"x": Float(0.0, 1.0)})
    assert a.digest() == SearchSpace({"x": Float(0.0, 1.0)}).digest()
    assert a.digest() != SearchSpace({"x": Float(0.0, 2.0)}).digest()


def test_narrow_shrinks_around_the_center_and_at_edge_flags_bounds():
    space = SearchSpace({"lr": Float(1e-4, 1e-1, log=True), "w": Int(1, 101),
                         "act": Categorical(("relu", "tanh"))})
    fine = narrow(space, {"lr": 1e-2, "w": 50, "act": "relu"}, factor=0.25)
    lr, w = fine.params["lr"], fine.params["w"]
    assert lr.low < 1e-2 < lr.high and lr.high / lr.low == pytest.approx(1e3 ** 0.25)
    assert w.low <= 50 <= w.high and w.high - w.low <= 26
    assert fine.params["act"] == space.params["act"]
    edge = narrow(space, {"lr": 1e-4}, factor=0.5).params["lr"]
    assert edge.low == 1e-4 and edge.high < 1e-1
    assert at_edge(space, {"lr": 1.1e-4, "w": 50}) == ["lr"]
    with pytest.raises(ValueError, match="factor"):
        narrow(space, {}, factor=0.0)
