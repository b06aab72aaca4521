"""Pretrained learned optimizers: weights (flax msgpack) plus a JSON card, loadable offline.

A pretrained optimizer NAME is two files side by side: `NAME.msgpack` (theta) and `NAME.json`
(the card: format, architecture = `lopt.config()`, the weights' sha256, and how it was trained:
task family, estimator, steps, seed, git hash, wall time, devices, command, config). Shipped ones
live in `learned_opt/pretrained/`; any directory written by `save_pretrained` (e.g. a
meta-training workdir) works the same way through a path.

    tx = lo.load_pretrained("mlp_digits")                    # a shipped name, or a path
    lopt, theta, card = lo.load_pretrained_theta("workdirs/run1/mlp_digits.json")
    [card["name"] for card in lo.list_pretrained()]
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from learned_opt.base import LearnedOptimizer
from learned_opt.policy import LearningRate
from learned_opt.registry import get_lopt

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
FORMAT = "learned_opt.pretrained/v1"


def save_pretrained(path_or_dir: str | os.PathLike, name: str, lopt: LearnedOptimizer,
                    theta: Any, card: dict | None = None) -> Path:
    """Write `NAME.msgpack` and `NAME.json` into the directory `path_or_dir`.

    Args:
      path_or_dir: target directory (created).
      name: file stem and the card's name (letters, digits, `_`, `-`, `.`).
      lopt: the architecture (its `config()` goes on the card).
      theta: its meta-parameters.
      card: what else the card records (family, estimator, steps, seed, git, wall time...).

    Returns:
      The path of the JSON card.
    """
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise ValueError(f"pretrained name {name!r} must be non-empty letters, digits, _ - .")
    lopt.check_theta(theta)
    directory = Path(path_or_dir)
    directory.mkdir(parents=True, exist_ok=True)
    weights = flax.serialization.msgpack_serialize(
        jax.tree.map(lambda x: np.asarray(jax.device_get(x)), theta))
    (directory / f"{name}.msgpack").write_bytes(weights)
    full_card = dict(card or {})
    full_card.update(format=FORMAT, name=name, architecture=lopt.config(),
                     weights_file=f"{name}.msgpack",
                     weights_sha256=hashlib.sha256(weights).hexdigest())
    card_path = directory / f"{name}.json"
    card_path.write_text(json.dumps(full_card, indent=1, sort_keys=True, default=str))
    return card_path


def _card_path(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".msgpack":
        path = path.with_suffix(".json")
    if path.is_file():
        return path
    if path.suffix != ".json" and path.with_suffix(".json").is_file() and os.sep in str(path):
        return path.with_suffix(".json")
    shipped = PRETRAINED_DIR / f"{name_or_path}.json"
    if shipped.is_file():
        return shipped
    names = [c["name"] for c in list_pretrained()]
    raise ValueError(f"no pretrained optimizer {str(name_or_path)!r}: not a file, and not a "
                     f"shipped name; shipped names: {names}")


def _read_card(path: Path) -> dict:
    try:
        card = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a pretrained card (invalid JSON: {e})") from None
    found = card.get("format") if isinstance(card, dict) else type(card).__name__
    if found != FORMAT:
        raise ValueError(f"{path} is not a learned_opt pretrained card (expected format "
                         f"{FORMAT!r}, got {found!r})")
    return card


def load_pretrained_theta(name_or_path: str | os.PathLike) -> tuple[LearnedOptimizer, Any, dict]:
    """(architecture, theta, card) of a shipped name or a card / weights path.

    Raises:
      ValueError: unknown name, a file that is not a pretrained card, corrupt weights (hash
        mismatch or undecodable), or weights that do not fit the card's architecture.
    """
    card_path = _card_path(name_or_path)
    card = _read_card(card_path)
    lopt = get_lopt(**card["architecture"])
    weights_path = card_path.parent / card["weights_file"]
    if not weights_path.is_file():
        raise ValueError(f"pretrained card {card_path} names weights {weights_path}, which do "
                         f"not exist")
    weights = weights_path.read_bytes()
    if hashlib.sha256(weights).hexdigest() != card.get("weights_sha256"):
        raise ValueError(f"{weights_path} is corrupt: its sha256 does not match the card's "
                         f"weights_sha256 ({card_path})")
    try:
        theta = flax.serialization.msgpack_restore(weights)
    except Exception as e:  # noqa: BLE001 - msgpack raises many types on bad bytes
        raise ValueError(f"{weights_path} cannot be decoded as msgpack weights: {e}") from None
    theta = jax.tree.map(jnp.asarray, theta)
    lopt.check_theta(theta)
    return lopt, theta, card


def load_pretrained(name_or_path: str | os.PathLike, num_steps: int | None = None, *,
                    learning_rate: LearningRate | None = None,
                    **optimizer_kwargs) -> optax.GradientTransformationExtraArgs:
    """The pretrained learned optimizer as an optax transformation (offline).

    `num_steps` (the training horizon) is passed to `lopt.optimizer`; the card's
    `lopt_num_steps` says what it was meta-trained with. `learning_rate` (a positive float
    or an optax schedule) defaults to the card's `learning_rate`:

        tx = lo.load_pretrained("mlp_digits_mlp", learning_rate=3e-3)
    """
    lopt, theta, card = load_pretrained_theta(name_or_path)
    if learning_rate is None:
        learning_rate = card.get("learning_rate")
    return lopt.optimizer(theta, num_steps=num_steps, learning_rate=learning_rate,
                          **optimizer_kwargs)


def list_pretrained(directory: str | os.PathLike | None = None) -> list[dict]:
    """Cards of the pretrained optimizers in `directory` (default: the shipped ones), by name."""
    directory = Path(directory) if directory is not None else PRETRAINED_DIR
    cards = []
    for path in sorted(directory.glob("*.json")):
        try:
            cards.append(_read_card(path))
        except ValueError:
            continue  # not a card: ignore foreign JSON files
    return sorted(cards, key=lambda c: c["name"])
