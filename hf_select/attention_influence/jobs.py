"""AttentionInfluence scoring jobs: a whole dataset scored resumably on one or many processes.

:func:`score_sharded` runs unchanged on one process or under ``torchrun`` / ``accelerate launch``: every rank
scores its shard and writes parquet parts with completion markers (:func:`hf_select.sharded_map`), so a
killed job resumes; rank 0 then merges the parts. The datatrove path (:mod:`hf_select.datatrove`) runs the same
scorer with the same :class:`~hf_select.attention_influence.AttentionInfluenceConfig`.
"""

from __future__ import annotations

from pathlib import Path

from transformers.utils import logging

from ..loading import check_text_column
from ..sharded_map import distributed_rank_and_world_size, load_sharded_output, sharded_map, wait_for_ranks
from .scorer import AttentionInfluence, AttentionInfluenceConfig

logger = logging.get_logger(__name__)


def check_scored(too_short: list[bool], config: AttentionInfluenceConfig, source: str) -> None:
    """Refuse a result where no document could be scored; warn about the flagged ones."""
    short = sum(bool(s) for s in too_short)
    if not too_short or short == len(too_short):
        raise ValueError(
            f"no document of {source} could be scored: {short} of {len(too_short)} have fewer than "
            f"--min_tokens {config.min_tokens} predicted tokens or are whitespace only"
        )
    if short:
        logger.warning(f"{short} of {len(too_short)} documents flagged ai_too_short (never selected)")


def score_sharded(
    model,
    tokenizer,
    dataset,
    config: AttentionInfluenceConfig,
    output_dir: str | Path,
    part_size: int = 10_000,
    map_batch_size: int = 256,
    source: str = "the dataset",
):
    """Score ``dataset`` with :class:`AttentionInfluence` into ``output_dir/parts`` (resumable, one shard per
    rank). Returns the merged, checked ``Dataset`` on rank 0 and None on the other ranks."""
    if config.text_column not in dataset.column_names:
        raise ValueError(f"text column {config.text_column!r} not in {source}: {dataset.column_names}")
    check_text_column(dataset, config.text_column, source)
    rank, world_size = distributed_rank_and_world_size()
    scorer = AttentionInfluence(model, tokenizer, config=config)
    parts = Path(output_dir) / "parts"
    sharded_map(
        dataset, scorer, parts, scorer.fingerprint(dataset), part_size=part_size, batch_size=map_batch_size
    )
    if rank != 0:
        return None
    wait_for_ranks(parts, world_size)
    scored = load_sharded_output(parts, world_size, expected_input_rows=len(dataset))
    check_scored(scored["ai_too_short"] if len(scored) else [], config, source)
    return scored
