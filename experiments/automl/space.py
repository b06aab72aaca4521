"""A declarative search space: float (log / linear), int, categorical, conditional parameters.

One space describes what hyperparameter search (HPO) and architecture search (NAS) explore, and
the same object is what every sampler, the grid, coarse-to-fine narrowing and the study
fingerprint are derived from:

    space = SearchSpace({
        "optimizer": Categorical(("adam", "sgd")),
        "learning_rate": Float(1e-4, 1e-1, log=True),
        "momentum": Float(0.0, 0.99, when={"optimizer": ("sgd",)}),   # only for sgd
        "depth": Int(1, 3),
    })
    params = space.suggest(trial)          # an optuna trial -> {"optimizer": "sgd", ...}
    space.grid(points=4)                   # {name: [values]} for Optuna's GridSampler
    narrow(space, best, factor=0.25)       # a smaller space around `best` (coarse-to-fine)
    space.digest()                         # short hash: part of the study name
    SearchSpace.from_dict({"learning_rate": {"type": "float", "low": 1e-4, "high": 0.1,
                                             "log": True}})          # from a config file

Conditions name earlier parameters: a conditional parameter is suggested only when every parent
it names took one of the listed values, so an inactive parameter never appears in a trial.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PARAM_TYPES = ("float", "int", "categorical")


def _check_when(when: Mapping[str, Sequence[Any]] | None) -> dict[str, tuple]:
    when = dict(when or {})
    for parent, values in when.items():
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"condition on {parent!r} must be a non-empty sequence of values, "
                             f"got {values!r}")
    return {parent: tuple(values) for parent, values in when.items()}


@dataclasses.dataclass(frozen=True)
class Float:
    """A real in [low, high]; `log`: searched on a log scale; `grid`: explicit grid values."""

    low: float
    high: float
    log: bool = False
    grid: tuple[float, ...] | None = None
    when: Mapping[str, Sequence[Any]] | None = None

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"Float needs finite low < high, got low={self.low}, "
                             f"high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"Float(log=True) needs low > 0, got low={self.low}")
        if self.grid is not None:
            object.__setattr__(self, "grid", tuple(float(v) for v in self.grid))
            outside = [v for v in self.grid if not self.low <= v <= self.high]
            if not self.grid or outside:
                raise ValueError(f"Float grid must be non-empty and inside [{self.low}, "
                                 f"{self.high}]; outside: {outside}")
        object.__setattr__(self, "when", _check_when(self.when))

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def grid_values(self, points: int) -> list[float]:
        if self.grid is not None:
            return list(self.grid)
        if points == 1:
            mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
            return [float(mid)]
        spaced = np.geomspace if self.log else np.linspace
        return [float(v) for v in spaced(self.low, self.high, points)]

    def position(self, value: float) -> float:
        """Where `value` lies in the range, 0 (low) to 1 (high), on the search scale."""
        if self.log:
            return math.log(value / self.low) / math.log(self.high / self.low)
        return (value - self.low) / (self.high - self.low)


@dataclasses.dataclass(frozen=True)
class Int:
    """An integer in [low, high] (inclusive), in multiples of `step` from low."""

    low: int
    high: int
    log: bool = False
    step: int = 1
    when: Mapping[str, Sequence[Any]] | None = None

    def __post_init__(self):
        if self.low > self.high:
            raise ValueError(f"Int needs low <= high, got low={self.low}, high={self.high}")
        if self.step < 1 or (self.log and (self.low < 1 or self.step != 1)):
            raise ValueError(f"Int needs step >= 1 (and, with log=True, low >= 1 and step 1); "
                             f"got low={self.low}, step={self.step}, log={self.log}")
        object.__setattr__(self, "when", _check_when(self.when))

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self, points: int) -> list[int]:
        values = list(range(self.low, self.high + 1, self.step))
        if len(values) <= points:
            return values
        picks = np.round(np.linspace(0, len(values) - 1, points)).astype(int)
        return sorted({values[i] for i in picks})

    def position(self, value: int) -> float:
        if self.low == self.high:
            return 0.5
        if self.log:
            return math.log(value / self.low) / math.log(self.high / self.low)
        return (value - self.low) / (self.high - self.low)


@dataclasses.dataclass(frozen=True)
class Categorical:
    """One of `choices` (JSON scalars: str, int, float, bool, None)."""

    choices: tuple
    when: Mapping[str, Sequence[Any]] | None = None

    def __post_init__(self):
        choices = tuple(self.choices) if not isinstance(self.choices, str) else ()
        if not choices:
            raise ValueError(f"Categorical needs a non-empty sequence of choices, got "
                             f"{self.choices!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise ValueError(f"Categorical choices repeat a value: {choices}")
        object.__setattr__(self, "choices", choices)
        object.__setattr__(self, "when", _check_when(self.when))

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, self.choices)

    def grid_values(self, points: int) -> list:
        del points
        return list(self.choices)


Param = Float | Int | Categorical


def _param_dict(param: Param) -> dict[str, Any]:
    kind = {Float: "float", Int: "int", Categorical: "categorical"}[type(param)]
    fields = {k: v for k, v in dataclasses.asdict(param).items() if v not in (None, {})}
    return {"type": kind, **fields}


class SearchSpace:
    """An ordered mapping name -> Float / Int / Categorical; validated when built.

    Raises ValueError for an empty space, a parameter that is not one of the three types, or a
    condition that names a later or unknown parameter, or values that parameter cannot take.
    """

    def __init__(self, params: Mapping[str, Param]):
        params = dict(params)
        if not params:
            raise ValueError("the search space is empty: give at least one parameter")
        seen: dict[str, Param] = {}
        for name, param in params.items():
            if not isinstance(param, Float | Int | Categorical):
                raise ValueError(f"parameter {name!r} must be Float, Int or Categorical, got "
                                 f"{type(param).__name__}")
            for parent, values in param.when.items():
                if parent not in seen:
                    raise ValueError(f"parameter {name!r} is conditional on {parent!r}, which is "
                                     f"not an earlier parameter; earlier: {sorted(seen)}")
                invalid = [v for v in values if not _can_take(seen[parent], v)]
                if invalid:
                    raise ValueError(f"parameter {name!r}: condition {parent!r} in {values} "
                                     f"can never hold for {invalid} (not values of {parent!r})")
            seen[name] = param
        self.params = params

    # ---- building -----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, spec: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        """A space from plain dicts (config files): {name: {"type": "float", "low": ..., ...}}."""
        if not spec:
            raise ValueError("the search space is empty: give at least one parameter")
        params = {}
        for name, entry in dict(spec).items():
            entry = dict(entry)
            kind = entry.pop("type", None)
            if kind not in PARAM_TYPES:
                raise ValueError(f"parameter {name!r}: type must be one of {PARAM_TYPES}, got "
                                 f"{kind!r}")
            factory = {"float": Float, "int": Int, "categorical": Categorical}[kind]
            valid = {f.name for f in dataclasses.fields(factory)}
            unknown = sorted(set(entry) - valid)
            if unknown:
                raise ValueError(f"parameter {name!r}: unknown keys {unknown}; valid: "
                                 f"{sorted(valid)}")
            if "choices" in entry:
                entry["choices"] = tuple(entry["choices"])
            if entry.get("grid") is not None:
                entry["grid"] = tuple(entry["grid"])
            params[name] = factory(**entry)
        return cls(params)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: _param_dict(param) for name, param in self.params.items()}

    def digest(self) -> str:
        """Short hash of the space: a changed space never reuses another space's trials."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    # ---- use ----------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.params)

    @property
    def is_conditional(self) -> bool:
        return any(param.when for param in self.params.values())

    def is_active(self, name: str, values: Mapping[str, Any]) -> bool:
        """Whether parameter `name` is used given the (earlier) values already chosen."""
        return all(parent in values and values[parent] in allowed
                   for parent, allowed in self.params[name].when.items())

    def suggest(self, trial) -> dict[str, Any]:
        """The active parameters' values, suggested in order from an Optuna trial."""
        values: dict[str, Any] = {}
        for name, param in self.params.items():
            if self.is_active(name, values):
                values[name] = param.suggest(trial, name)
        return values

    def grid(self, points: int = 5) -> dict[str, list]:
        """{name: values} for Optuna's GridSampler: `points` values per float (log- or
        linearly spaced, or its explicit grid), at most `points` per int, every category.

        Raises ValueError for a conditional space (a grid over it would repeat points).
        """
        if points < 1:
            raise ValueError(f"grid points must be >= 1, got {points}")
        if self.is_conditional:
            raise ValueError("a grid over a conditional space is not supported: use the random, "
                             "tpe or evolution sampler, or drop the conditions")
        return {name: param.grid_values(points) for name, param in self.params.items()}

    def grid_size(self, points: int = 5) -> int:
        return int(np.prod([len(v) for v in self.grid(points).values()]))

    def grid_points(self, points: int = 5) -> list[dict[str, Any]]:
        """Every point of the grid, as dicts."""
        grid = self.grid(points)
        return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _can_take(param: Param, value: Any) -> bool:
    if isinstance(param, Categorical):
        return value in param.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(param, Int):
        return float(value).is_integer() and param.low <= value <= param.high
    return param.low <= value <= param.high


def at_edge(space: SearchSpace, best: Mapping[str, Any], margin: float = 0.05) -> list[str]:
    """Numeric parameters whose best value sits in the outer `margin` of its range (on the
    search scale): the optimum may lie outside, widen the range."""
    flagged = []
    for name, param in space.params.items():
        if isinstance(param, Float | Int) and name in best:
            position = param.position(best[name])
            if position <= margin or position >= 1 - margin:
                flagged.append(name)
    return flagged


def narrow(space: SearchSpace, center: Mapping[str, Any], factor: float = 0.25) -> SearchSpace:
    """A space around `center` whose numeric ranges are `factor` of the old width (on the search
    scale), clipped to the old bounds; categories stay, grids keep the values inside.

        fine = narrow(space, {"learning_rate": 3e-3}, factor=0.25)   # 1e-4..1e-1 -> ~1.3e-3..7e-3
    """
    if not 0 < factor <= 1:
        raise ValueError(f"narrowing factor must be in (0, 1], got {factor}")
    params: dict[str, Param] = {}
    for name, param in space.params.items():
        if name not in center or isinstance(param, Categorical):
            params[name] = param
            continue
        value = center[name]
        if isinstance(param, Float):
            if param.log:
                half = factor * math.log(param.high / param.low) / 2
                low = max(param.low, value * math.exp(-half))
                high = min(param.high, value * math.exp(half))
            else:
                half = factor * (param.high - param.low) / 2
                low, high = max(param.low, value - half), min(param.high, value + half)
            grid = None
            if param.grid is not None:
                grid = tuple(v for v in param.grid if low <= v <= high) or (float(value),)
            params[name] = dataclasses.replace(param, low=low, high=high, grid=grid)
        else:
            half = max(param.step, int(round(factor * (param.high - param.low) / 2)))
            low = max(param.low, int(value) - half)
            low = param.low + ((low - param.low) // param.step) * param.step
            high = min(param.high, int(value) + half)
            params[name] = dataclasses.replace(param, low=low, high=high)
    return SearchSpace(params)
