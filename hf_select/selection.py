"""Selecting documents by a score column: top fraction per group, the up-weighting mix, rank combinations.

AttentionInfluence (arXiv 2505.07293, section 4) keeps the top 20% of each domain by score and ADDS them to
the full corpus (up-weighting, not filtering); scores are compared only within a domain. Core functions take
arrays and return indices; the ``datasets`` wrappers call them per group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers.utils import logging

from .errors import InputKeyError
from .loading import DataArguments

logger = logging.get_logger(__name__)


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


@dataclass
class SelectArguments(DataArguments):
    """Options of ``hf-select select`` (``--dataset_name_or_path``, alias ``--scored_dataset``: the scored
    dataset)."""

    dataset_name_or_path: str = field(
        default=None,
        metadata={
            "help": "Scored dataset: save_to_disk folder, file or Hub id.",
            "aliases": ["--scored_dataset", "--dataset_name"],
        },
    )
    column: str = field(default="ai_score", metadata={"help": "Score column (higher is better)."})
    fraction: float = field(default=0.2, metadata={"help": "Share to keep per group (paper: 0.2)."})
    by: str | None = field(default="domain", metadata={"help": "Group column (empty: select globally)."})
    combine_with: str | None = field(
        default=None,
        metadata={"help": "Another score column to combine with by rank (e.g. a quality score)."},
    )
    combine_weight: float = field(
        default=0.5, metadata={"help": "Weight of --combine_with in the combination."}
    )
    output_dir: str = field(default="selected", metadata={"help": "Folder for the selection (save_to_disk)."})
    mix: bool = field(
        default=False,
        metadata={
            "help": "Also write the full corpus plus the selection (up-weighting) to <output_dir>/mix; a "
            "later --dataset_name_or_path <output_dir> then reads the mix."
        },
    )
    repeats: int = field(default=1, metadata={"help": "Extra copies of the selection in the mix."})


def _never_select_flagged(dataset, columns):
    import math

    columns = [c for c in columns if c]

    def mask(batch):
        return {
            c: [math.nan if short else v for short, v in zip(batch["ai_too_short"], batch[c])]
            for c in columns
        }

    return dataset.map(mask, batched=True, keep_in_memory=True)


def select_to_disk(args: SelectArguments):
    """``hf-select select``: keep the top ``args.fraction`` of the scored dataset per ``args.by`` group (optionally
    combined by rank with ``args.combine_with``) and save it, with the up-weighted mix when ``args.mix``, under
    ``args.output_dir``. Returns the selection and the dataset it came from."""
    from .loading import require_columns, write_output_manifest

    if not args.dataset_name_or_path:
        raise ValueError("--scored_dataset (or --dataset_name_or_path) is required")
    dataset = args.load_dataset()
    if len(dataset) == 0:
        raise ValueError(f"{args.dataset_name_or_path} has no rows to select from")
    require_columns(dataset, [args.column] + ([args.combine_with] if args.combine_with else []))
    if "ai_too_short" in dataset.column_names:  # never select rows flagged too short to score
        dataset = _never_select_flagged(dataset, [args.column, args.combine_with])
    by = args.by or None
    column = args.column
    if args.combine_with:
        weights = [1 - args.combine_weight, args.combine_weight]
        dataset = combine_by_rank(dataset, [args.column, args.combine_with], weights, by=by)
        column = "combined_score"
    selected = select_top_fraction(dataset, column, args.fraction, by=by)
    if len(selected) == 0:
        raise ValueError(
            f"the selection is empty: no row of {args.dataset_name_or_path} has a finite {column!r} in the top "
            f"--fraction {args.fraction}"
        )
    out = Path(args.output_dir)
    selected.save_to_disk(str(out / "selected"))
    if args.mix:
        upweighted_mix(dataset, selected, args.repeats).save_to_disk(str(out / "mix"))
    # a later command given --dataset_name_or_path <output_dir> trains on the mix (or the selection)
    write_output_manifest(
        out, ["selected", "mix"] if args.mix else ["selected"], "mix" if args.mix else "selected"
    )
    logger.warning(f"selected {len(selected)} of {len(dataset)} rows -> {out}")
    return selected, dataset
