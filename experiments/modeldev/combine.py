"""Combining members' outputs, with the input checks every ensemble method shares.

    probs_MNC = members.member_outputs(task, params_M, "test")     # (members, rows, classes)
    average_probs(probs_MNC)          # (N, C): the mean of the members' probabilities
    majority_vote(probs_MNC)          # (N,): most frequent predicted class, ties -> lowest class
    mean_prediction(outputs_MNT)      # (N, T): regression, the members' mean
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_member_outputs(outputs, *, name: str = "outputs", min_members: int = 2) -> np.ndarray:
    """`outputs` as a float (M, N, C) array: at least `min_members` members, all of one shape.

    A list of per-member arrays of different shapes (different rows or classes) is a
    ValueError naming the offending member.
    """
    if isinstance(outputs, Sequence) and not isinstance(outputs, np.ndarray):
        shapes = [np.shape(member) for member in outputs]
        if shapes and any(shape != shapes[0] for shape in shapes):
            bad = next(i for i, shape in enumerate(shapes) if shape != shapes[0])
            raise ValueError(f"{name}: member outputs must all have one shape; member 0 has "
                             f"{shapes[0]}, member {bad} has {shapes[bad]}")
    array = np.asarray(outputs, dtype=np.float64)
    if array.ndim != 3:
        raise ValueError(f"{name} must be (members, rows, outputs); got shape {array.shape}")
    if array.shape[0] < min_members:
        raise ValueError(f"{name}: an ensemble needs at least {min_members} members; got "
                         f"{array.shape[0]}")
    return array


def check_member_preds(preds, *, name: str = "preds", min_members: int = 2) -> np.ndarray:
    """`preds` as an int (M, N) array of predicted classes, at least `min_members` rows."""
    if isinstance(preds, Sequence) and not isinstance(preds, np.ndarray):
        lengths = [np.shape(member) for member in preds]
        if lengths and any(length != lengths[0] for length in lengths):
            raise ValueError(f"{name}: members predict different numbers of rows: {lengths}")
    array = np.asarray(preds)
    if array.ndim != 2:
        raise ValueError(f"{name} must be (members, rows) class predictions; got {array.shape}")
    if array.shape[0] < min_members:
        raise ValueError(f"{name}: an ensemble needs at least {min_members} members; got "
                         f"{array.shape[0]}")
    return array.astype(np.int64)


def average_probs(probs_MNC) -> np.ndarray:
    """(N, C) mean of the members' class probabilities (soft voting)."""
    return check_member_outputs(probs_MNC, name="probs_MNC").mean(axis=0)


def mean_prediction(outputs_MNT) -> np.ndarray:
    """(N, T) mean of the members' regression outputs."""
    return check_member_outputs(outputs_MNT, name="outputs_MNT").mean(axis=0)


def vote_counts(preds_MN, num_classes: int) -> np.ndarray:
    """(N, C) how many members predict each class for each row."""
    preds_MN = check_member_preds(preds_MN, name="preds_MN")
    if preds_MN.min() < 0 or preds_MN.max() >= num_classes:
        raise ValueError(f"preds_MN must be classes in [0, {num_classes}); got range "
                         f"[{preds_MN.min()}, {preds_MN.max()}]")
    counts = np.zeros((preds_MN.shape[1], num_classes), np.int64)
    for member in preds_MN:
        np.add.at(counts, (np.arange(preds_MN.shape[1]), member), 1)
    return counts


def majority_vote(probs_MNC) -> np.ndarray:
    """(N,) the class most members predict (hard voting); ties go to the lowest class."""
    probs_MNC = check_member_outputs(probs_MNC, name="probs_MNC")
    return vote_counts(probs_MNC.argmax(axis=-1), probs_MNC.shape[-1]).argmax(axis=1)


def vote_probs(probs_MNC) -> np.ndarray:
    """(N, C) vote fractions: the hard vote as a distribution (for log loss / calibration)."""
    probs_MNC = check_member_outputs(probs_MNC, name="probs_MNC")
    counts = vote_counts(probs_MNC.argmax(axis=-1), probs_MNC.shape[-1])
    return counts / probs_MNC.shape[0]
