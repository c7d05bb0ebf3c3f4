"""``hf-select score attention-influence``: score any dataset with AttentionInfluence (arXiv 2505.07293).

Runs unchanged on one process or under ``torchrun`` / ``accelerate launch``: every rank scores its shard and
writes parquet parts with completion markers (:mod:`hf_select.sharded_map`), so a killed job resumes. Rank 0
then merges the parts into ``<output_dir>/scored`` (``save_to_disk``). With ``--executor local|slurm|ray`` the
same scorer runs as a datatrove pipeline instead (:mod:`hf_select.datatrove`, for multi-node corpora).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers.utils import logging

from ..loading import DataArguments, ModelArguments, load_model_and_tokenizer, write_output_manifest

logger = logging.get_logger(__name__)


@dataclass
class ScoreAttentionInfluenceArguments(DataArguments):
    """Options of ``hf-select score attention-influence`` (the dataset options come from ``DataArguments``)."""

    heads_file: str = field(
        default=None, metadata={"help": "RetrievalHeads JSON from hf-select detect-heads."}
    )
    output_dir: str = field(
        default="ai_scores", metadata={"help": "Folder of the parquet parts and the result."}
    )
    max_length: int = field(
        default=2048, metadata={"help": "Tokens per chunk (longer documents are chunked)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Chunks per forward pass."})
    map_batch_size: int = field(
        default=256, metadata={"help": "Documents per Dataset.map batch (sorted by length)."}
    )
    part_size: int = field(
        default=10_000, metadata={"help": "Documents per parquet part (unit of resumption)."}
    )
    max_samples: int | None = field(default=None, metadata={"help": "Score only the first N documents."})
    device: str | None = field(
        default=None, metadata={"help": "Device (default: cuda:<local rank> if any, else cpu)."}
    )
    executor: str | None = field(
        default=None,
        metadata={
            "help": "Run on datatrove instead: local, slurm or ray (pip install 'hf-select[datatrove]'); "
            "--dataset_name_or_path is then a folder of JSONL/parquet files (see hf_select.datatrove).",
            "choices": ["local", "slurm", "ray"],
        },
    )
    tasks: int = field(default=1, metadata={"help": "datatrove tasks (shards, the unit of resumption)."})
    workers: int = field(default=-1, metadata={"help": "datatrove tasks running at once (-1: all)."})
    executor_config: str | None = field(
        default=None, metadata={"help": "JSON/YAML of further executor arguments (Slurm partition, time ...)."}
    )
    min_tokens: int = field(
        default=16,
        metadata={
            "help": "Documents with fewer predicted tokens, and whitespace-only ones, are flagged ai_too_short "
            "and get a NaN ai_score, so that no selection keeps them (a 1-3 token loss ratio is noise)."
        },
    )


CONFIG_CLASSES = (ModelArguments, ScoreAttentionInfluenceArguments)


def flag_short_documents(scored, text_column: str, min_tokens: int):
    """Flag documents with fewer than ``min_tokens`` predicted tokens or only whitespace as ``ai_too_short``
    and set their ``ai_score`` to NaN (never selected by :func:`hf_select.select_top_fraction`).

    The paper scores documents of web corpora, where such documents are rare; their loss ratio over a few
    tokens is noise that can land in any top fraction. The threshold is a parameter (``--min_tokens``)."""
    import math

    def flag(batch):
        short = [
            bool(too_short) or n < min_tokens or not str(text).strip()
            for too_short, n, text in zip(batch["ai_too_short"], batch["ai_num_tokens"], batch[text_column])
        ]
        score = [math.nan if s else v for s, v in zip(short, batch["ai_score"])]
        return {"ai_too_short": short, "ai_score": score}

    return scored.map(flag, batched=True, keep_in_memory=True, desc="flag short documents")


def run(model_args: ModelArguments, args: ScoreAttentionInfluenceArguments) -> int:
    import torch

    from ..attention_influence.retrieval_heads import RetrievalHeads
    from ..attention_influence.scorer import AttentionInfluence
    from ..sharded_map import (
        distributed_rank_and_world_size,
        load_sharded_output,
        sharded_map,
        wait_for_ranks,
    )

    if args.executor:
        from ..datatrove.pipelines import run_attention_influence_command

        return run_attention_influence_command(model_args, args)
    if not args.dataset_name_or_path or not args.heads_file:
        raise ValueError("--dataset_name_or_path and --heads_file are required")
    rank, world_size = distributed_rank_and_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = args.device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model_and_tokenizer(model_args, device=device)
    heads = RetrievalHeads.load(args.heads_file)
    dataset = args.load_dataset()
    if args.text_column not in dataset.column_names:
        raise ValueError(
            f"text column {args.text_column!r} not in {args.dataset_name_or_path}: {dataset.column_names}"
        )
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    scorer = AttentionInfluence(
        model, tokenizer, heads.selected, args.max_length, args.batch_size, text_column=args.text_column
    )
    parts = Path(args.output_dir) / "parts"
    sharded_map(
        dataset,
        scorer,
        parts,
        scorer.fingerprint(dataset),
        part_size=args.part_size,
        batch_size=args.map_batch_size,
    )
    if rank == 0:
        wait_for_ranks(parts, world_size)
        scored = load_sharded_output(parts, world_size, expected_input_rows=len(dataset))
        scored = flag_short_documents(scored, args.text_column, args.min_tokens)
        short = sum(scored["ai_too_short"])
        if len(scored) == 0 or short == len(scored):
            raise ValueError(
                f"no document of {args.dataset_name_or_path} could be scored: {short} of {len(scored)} have fewer than "
                f"--min_tokens {args.min_tokens} predicted tokens or are whitespace only"
            )
        if short:
            logger.warning(f"{short} of {len(scored)} documents flagged ai_too_short (never selected)")
        scored.save_to_disk(str(Path(args.output_dir) / "scored"))
        write_output_manifest(args.output_dir, ["scored"], "scored")  # --scored_dataset <output_dir> reads it
        logger.warning(f"scored {len(scored)} documents -> {Path(args.output_dir) / 'scored'}")
    return 0
