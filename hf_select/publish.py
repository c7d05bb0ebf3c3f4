"""Publish a scored dataset (FineWeb-Edu layout) or a trained model: the options of ``hf-select push`` and the
one call that acts on them (:func:`publish`), over :mod:`hf_select.hub`.

The Hub token comes from ``HF_TOKEN`` or the huggingface_hub login (never from the command line, where it
would show in the process list); it is never printed. ``local_dir`` writes the same layout locally.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from transformers.utils import logging

logger = logging.get_logger(__name__)


@dataclass
class PushArguments:
    """What to publish and where."""

    kind: str = field(default="dataset", metadata={"help": "dataset (a scored dataset) or model."})
    source: str = field(
        default=None,
        metadata={"help": "Dataset: save_to_disk folder or .jsonl/.parquet file. Model: an HF model folder."},
    )
    repo_id: str | None = field(default=None, metadata={"help": "Hub repository to push to."})
    local_dir: str | None = field(
        default=None, metadata={"help": "Write the Hub layout to this folder instead."}
    )
    private: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})
    split: str = field(
        default="train", metadata={"help": "Dataset: split of the source and of the published data."}
    )
    score_column: str = field(default="score", metadata={"help": "Dataset: column holding the float score."})
    thresholds: list[float] = field(
        default_factory=list, metadata={"help": "Dataset: int_score thresholds, one config each."}
    )
    int_score_bins: int | None = field(
        default=None, metadata={"help": "Dataset: int_score = k-quantile bin (default: rounded score)."}
    )
    drop_nan: bool = field(
        default=False,
        metadata={
            "help": "Dataset: drop rows whose score is NaN/inf or that are flagged ai_too_short (else such "
            "rows are an error)."
        },
    )
    license: str | None = field(
        default=None,
        metadata={
            "help": "Dataset: card license (SPDX id, e.g. odc-by). Default: the value of the rows' 'license' "
            "column when it holds exactly one."
        },
    )
    language: list[str] = field(default_factory=list, metadata={"help": "Dataset: card languages (e.g. en)."})
    task_categories: list[str] = field(
        default_factory=lambda: ["text-generation"], metadata={"help": "Dataset: card task categories."}
    )
    method: str = field(default="unknown", metadata={"help": "Dataset: the scoring method (card)."})
    model_id: str | None = field(default=None, metadata={"help": "Dataset: the scoring model id (card)."})
    model_revision: str | None = field(default=None, metadata={"help": "Dataset: its revision (card)."})
    reference_model: str | None = field(
        default=None, metadata={"help": "Dataset: reference model, if any (card)."}
    )
    heads: str | None = field(
        default=None, metadata={"help": "Dataset: JSON list of (layer, head) used (card)."}
    )
    params: str | None = field(
        default=None, metadata={"help": "Dataset: JSON dict of scoring parameters (card)."}
    )
    selection: str | None = field(
        default=None, metadata={"help": "Model: JSON dict describing the data selection (card)."}
    )
    base_model: str | None = field(default=None, metadata={"help": "Model: the base model id (card)."})


def _json(value: str | None, what: str):
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--{what} must be JSON ({exc}): {value!r}") from None


def drop_unscored_rows(dataset, score_column: str):
    """Rows with a finite ``score_column`` that are not flagged ``ai_too_short`` (logged: how many dropped)."""
    import math

    if score_column not in dataset.column_names:
        raise ValueError(f"dataset has no score column {score_column!r}; columns: {dataset.column_names}")
    flagged = "ai_too_short" in dataset.column_names

    def keep(batch):
        return [
            v is not None and math.isfinite(v) and not (flagged and short)
            for v, short in zip(
                batch[score_column], batch["ai_too_short"] if flagged else batch[score_column]
            )
        ]

    kept = dataset.filter(keep, batched=True, keep_in_memory=True)
    if len(kept) < len(dataset):
        logger.warning(f"--drop_nan: {len(dataset) - len(kept)} of {len(dataset)} rows dropped")
    if len(kept) == 0:
        raise ValueError(f"--drop_nan left no rows: every {score_column!r} is NaN or flagged ai_too_short")
    return kept


def publish(args: PushArguments) -> str:
    """Publish what ``args`` names; returns where it went (the Hub repository URL or the local folder)."""
    from .hub import push_model, push_scored_dataset

    if not args.source:
        raise ValueError("--source is required")
    if args.kind == "dataset":
        from .loading import load_any_dataset

        dataset = load_any_dataset(args.source, split=args.split)
        if args.drop_nan:
            dataset = drop_unscored_rows(dataset, args.score_column)
        where = push_scored_dataset(
            dataset,
            args.repo_id,
            local_dir=args.local_dir,
            private=args.private,
            score_column=args.score_column,
            thresholds=args.thresholds,
            int_score_bins=args.int_score_bins,
            method=args.method,
            model_id=args.model_id,
            model_revision=args.model_revision,
            reference_model=args.reference_model,
            heads=_json(args.heads, "heads"),
            params=_json(args.params, "params"),
            split=args.split,
            license=args.license,
            language=args.language,
            task_categories=args.task_categories,
        )
    elif args.kind == "model":
        from .loading import load_causal_lm, load_tokenizer

        where = push_model(
            load_causal_lm(args.source),
            load_tokenizer(args.source, pad=False),
            args.repo_id,
            local_dir=args.local_dir,
            selection=_json(args.selection, "selection"),
            base_model=args.base_model,
            private=args.private,
        )
    else:
        raise ValueError(f"--kind must be dataset or model, got {args.kind!r}")
    return where
