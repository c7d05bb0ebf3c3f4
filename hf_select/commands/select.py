"""``hf-select select``: keep the top fraction of a scored dataset per domain (AttentionInfluence: top 20%),
optionally combined by rank with another score and written as the up-weighted training mix."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transformers.utils import logging

from ..loading import DataArguments

logger = logging.get_logger(__name__)


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


CONFIG_CLASSES = (SelectArguments,)


def _never_select_flagged(dataset, columns):
    import math

    columns = [c for c in columns if c]

    def mask(batch):
        return {
            c: [math.nan if short else v for short, v in zip(batch["ai_too_short"], batch[c])]
            for c in columns
        }

    return dataset.map(mask, batched=True, keep_in_memory=True)


def run(args: SelectArguments) -> int:
    from ..loading import require_columns, write_output_manifest
    from ..selection import combine_by_rank, select_top_fraction, upweighted_mix

    if not args.dataset_name_or_path:
        raise ValueError("--scored_dataset (or --dataset_name_or_path) is required")
    dataset = args.load_dataset()
    if len(dataset) == 0:
        raise ValueError(f"{args.dataset_name_or_path} has no rows to select from")
    require_columns(dataset, [args.column] + ([args.combine_with] if args.combine_with else []))
    if "ai_too_short" in dataset.column_names:  # scored by an older version: never select flagged rows
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
    return 0
