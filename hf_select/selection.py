"""Selecting documents by a score column: top fraction per group, the up-weighting mix, rank combinations.

AttentionInfluence (arXiv 2505.07293, section 4) keeps the top 20% of each domain by score and ADDS them to
the full corpus (up-weighting, not filtering); scores are compared only within a domain. Core functions take
arrays and return indices; the ``datasets`` wrappers call them per group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import InputKeyError


def top_fraction_indices(scores: Sequence[float], fraction: float) -> np.ndarray:
    """Indices (ascending) of the ``round(fraction * n)`` highest scores, at least one when ``fraction > 0``.

    NaN scores are never selected (and count in ``n``: a group with many unscorable documents yields fewer).
    Ties are broken by position (earlier first), so the result is deterministic.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0 or fraction == 0:
        return np.zeros(0, dtype=np.int64)
    count = max(1, round(fraction * values.size))
    valid = np.flatnonzero(~np.isnan(values))
    order = valid[np.lexsort((valid, -values[valid]))]
    return np.sort(order[:count])


def _groups(dataset, by: str | None) -> dict:
    if by is None:
        return {None: np.arange(len(dataset))}
    if by not in dataset.column_names:
        raise InputKeyError(f"group column {by!r} not in the dataset (columns: {dataset.column_names})")
    keys = np.asarray(dataset[by], dtype=object)
    return {key: np.flatnonzero(keys == key) for key in dict.fromkeys(keys.tolist())}


def _scores(dataset, column: str) -> np.ndarray:
    if column not in dataset.column_names:
        raise InputKeyError(f"score column {column!r} not in the dataset (columns: {dataset.column_names})")
    return np.asarray([math.nan if v is None else v for v in dataset[column]], dtype=np.float64)


def top_fraction_rows(
    dataset, column: str = "ai_score", fraction: float = 0.2, by: str | None = "domain"
) -> np.ndarray:
    """Row indices (ascending) of the top ``fraction`` of each ``by`` group (None: globally) by ``column``."""
    scores = _scores(dataset, column)
    chosen = [rows[top_fraction_indices(scores[rows], fraction)] for rows in _groups(dataset, by).values()]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def select_top_fraction(dataset, column: str = "ai_score", fraction: float = 0.2, by: str | None = "domain"):
    """Rows with the highest ``column`` values: the top ``fraction`` of each ``by`` group (None: globally).

    Returns ``dataset.select(...)`` in the original row order. NaN scores are never selected.
    """
    return dataset.select(top_fraction_rows(dataset, column, fraction, by).tolist())


def upweighted_mix(full, selected, repeats: int = 1, seed: int | None = 0, flag_column: str = "upweighted"):
    """The paper's training mix: the full corpus plus ``repeats`` extra copies of the selected subset.

    Adds a boolean ``flag_column`` (True on the extra copies); shuffled with ``seed`` (None: not shuffled).
    """
    from datasets import concatenate_datasets

    if repeats < 0:
        raise ValueError(f"repeats must be >= 0, got {repeats}")
    extra = [selected] * repeats
    if flag_column:
        full = full.add_column(flag_column, [False] * len(full))
        extra = [part.add_column(flag_column, [True] * len(part)) for part in extra]
    mix = concatenate_datasets([full, *extra])
    return mix.shuffle(seed=seed) if seed is not None else mix


def rank_percentiles(scores: Sequence[float]) -> np.ndarray:
    """Rank of each score scaled to [0, 1] (ties share their mean rank; NaN stays NaN)."""
    values = np.asarray(scores, dtype=np.float64)
    out = np.full(values.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(values))
    if valid.size == 0:
        return out
    order = valid[np.argsort(values[valid], kind="stable")]
    ranks = np.empty(valid.size)
    sorted_values = values[order]
    start = 0
    while start < order.size:  # average ranks over ties
        stop = start
        while stop + 1 < order.size and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[start : stop + 1] = (start + stop) / 2
        start = stop + 1
    out[order] = ranks / max(valid.size - 1, 1)
    return out


def combine_by_rank(
    dataset,
    columns: Sequence[str],
    weights: Sequence[float] | None = None,
    by: str | None = "domain",
    new_column: str = "combined_score",
):
    """Add ``new_column`` = weighted mean of the per-group rank percentiles of ``columns``.

    Combines scores on different scales (e.g. AttentionInfluence with a quality classifier). A row with a
    NaN in any column gets NaN.
    """
    weights = [1.0] * len(columns) if weights is None else list(weights)
    if len(weights) != len(columns) or not columns:
        raise ValueError("give one weight per column (and at least one column)")
    combined = np.zeros(len(dataset))
    groups = _groups(dataset, by)
    for column, weight in zip(columns, weights):
        scores = _scores(dataset, column)
        ranks = np.empty(len(dataset))
        for rows in groups.values():
            ranks[rows] = rank_percentiles(scores[rows])
        combined += weight * ranks
    combined /= sum(weights)
    if new_column in dataset.column_names:
        dataset = dataset.remove_columns(new_column)
    return dataset.add_column(new_column, combined.tolist())
