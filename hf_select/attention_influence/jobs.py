"""AttentionInfluence scoring jobs: a whole dataset scored resumably on one or many processes.

:func:`score_sharded` runs unchanged on one process or under ``torchrun`` / ``accelerate launch``: every rank
scores its shard and writes parquet parts with completion markers (:func:`hf_select.sharded_map`), so a
killed job resumes; rank 0 then merges the parts. The datatrove path (:mod:`hf_select.datatrove`) runs the same
scorer with the same :class:`~hf_select.attention_influence.AttentionInfluenceConfig`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers.utils import logging

from ..loading import (
    DatasetSourceArguments,
    ModelArguments,
    check_text_column,
    load_any_dataset,
    load_model_and_tokenizer,
    require_columns,
    write_output_manifest,
)
from ..sharded_map import distributed_rank_and_world_size, load_sharded_output, sharded_map, wait_for_ranks
from .prefilter import REASON_COLUMN
from .scorer import AttentionInfluence, AttentionInfluenceConfig

logger = logging.get_logger(__name__)


def check_scored(
    too_short: list[bool], config: AttentionInfluenceConfig, source: str, filtered: list | None = None
) -> None:
    """Refuse a result where no document could be scored; warn about the flagged ones (``filtered``: the
    prefilter's reasons, empty for kept documents)."""
    short = sum(bool(s) for s in too_short)
    dropped = sum(bool(r) for r in filtered) if filtered is not None else 0
    if not too_short or short + dropped == len(too_short):
        raise ValueError(
            f"no document of {source} could be scored: {short} of {len(too_short)} have fewer than "
            f"--min_tokens {config.min_tokens} predicted tokens or are whitespace only"
            + (f", {dropped} were dropped by --prefilter {config.prefilter}" if dropped else "")
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
    if config.prefilter != "none":  # every rank computes the same flags over the whole dataset
        from .prefilter import prefilter_dataset

        dataset = prefilter_dataset(dataset, config.prefilter, config.prefilter_options, config.text_column)
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
    filtered = scored[REASON_COLUMN] if REASON_COLUMN in scored.column_names else None
    check_scored(scored["ai_too_short"] if len(scored) else [], config, source, filtered)
    return scored


@dataclass
class ScoreAttentionInfluenceArguments:
    """Where and how the job runs (the scorer's parameters are :class:`AttentionInfluenceConfig`)."""

    output_dir: str = field(default="ai_scores", metadata={"help": "Folder of the parquet parts and the result."})
    map_batch_size: int = field(default=256, metadata={"help": "Documents sorted by length together."})
    part_size: int = field(default=10_000, metadata={"help": "Documents per parquet part (unit of resumption)."})
    max_samples: int | None = field(default=None, metadata={"help": "Score only the first N documents."})
    device: str | None = field(default=None, metadata={"help": "Default: cuda:<local rank> if any, else cpu."})
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


def executor_options(model_args: ModelArguments, args: ScoreAttentionInfluenceArguments) -> dict:
    """The keyword arguments of :func:`hf_select.datatrove.score_folder` that ``--executor`` runs take from the
    command line: the model-loading options and the executor's own (``--executor_config`` JSON/YAML)."""
    import yaml

    if model_args.gguf_file or args.max_samples is not None:
        raise ValueError("--gguf_file and --max_samples are not supported with --executor")
    load = {k: v for k, v in asdict(model_args).items() if k not in ("model_name_or_path", "gguf_file")}
    load["tokenizer"] = load.pop("tokenizer_name_or_path")
    extra = yaml.safe_load(Path(args.executor_config).read_text()) or {} if args.executor_config else {}
    return {"executor_kwargs": extra, "device": args.device, **load}


def score_to_disk(
    model_args: ModelArguments,
    data_args: DatasetSourceArguments,
    config: AttentionInfluenceConfig,
    args: ScoreAttentionInfluenceArguments,
) -> None:
    """Load the model and data that the arguments name, run :func:`score_sharded` and, on rank 0, save
    ``<output_dir>/scored`` with the manifest that lets ``--scored_dataset <output_dir>`` read it."""
    import os

    import torch

    dataset = data_args.load_dataset()
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    cuda = torch.cuda.is_available()
    device = args.device or (f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if cuda else "cpu")
    model, tokenizer = load_model_and_tokenizer(model_args, device=device)
    scored = score_sharded(model, tokenizer, dataset, config, args.output_dir, args.part_size, args.map_batch_size,
                           data_args.dataset_name_or_path)  # fmt: skip
    if scored is not None:  # rank 0
        scored.save_to_disk(str(Path(args.output_dir) / "scored"))
        write_output_manifest(args.output_dir, ["scored"], "scored")


@dataclass
class DetectHeadsArguments:
    """Options of ``hf-select detect-heads``."""

    output_file: str = field(
        default="retrieval_heads.json", metadata={"help": "Where to write the heads (JSON)."}
    )
    heatmap_file: str | None = field(
        default=None, metadata={"help": "Optional PNG heatmap of the head scores."}
    )
    proxy_dataset: str | None = field(
        default=None,
        metadata={"help": "Dataset (id or path) of ready proxy samples: columns prompt, answer, value_span."},
    )
    values_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Dataset (id or path) whose text gives the value sentences of generated proxy samples."
        },
    )
    values_column: str = field(default="text", metadata={"help": "Text column of --values_dataset."})
    split: str = field(default="train", metadata={"help": "Split of the proxy / values dataset."})
    num_samples: int = field(default=800, metadata={"help": "Proxy samples to generate (paper: 800)."})
    context_tokens: int = field(
        default=4096, metadata={"help": "Token budget of prompt + answer (paper: 4096; at most the model's)."}
    )
    top_fraction: float = field(
        default=0.05, metadata={"help": "Share of heads to select (paper: 0.05, the top 5 percent)."}
    )
    method: str = field(
        default="teacher_forced", metadata={"help": "teacher_forced (one pass) or generation (Wu et al.)."}
    )
    keep_failed: bool = field(
        default=False,
        metadata={"help": "Score samples the model fails instead of dropping them (Wu et al. drop)."},
    )
    min_accuracy: float = field(
        default=0.5, metadata={"help": "A sample fails below this answer accuracy / ROUGE-1 recall."}
    )
    key_length: int = field(default=32, metadata={"help": "Characters per random key (paper: 32)."})
    seed: int = field(default=0, metadata={"help": "Seed of the generated proxy samples."})
    device: str | None = field(
        default=None, metadata={"help": "Device (default: cuda if available, else cpu)."}
    )


def sentences(texts, limit: int = 50_000) -> list[str]:
    """Sentence-like pieces of ``texts`` (split at sentence ends and line breaks) to use as proxy values."""
    out: list[str] = []
    for text in texts:
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
        if len(out) >= limit:
            break
    return out[:limit]


def detect_heads_job(model_args: ModelArguments, args: DetectHeadsArguments):
    """``hf-select detect-heads``: load the model and the proxy samples (or the texts of their values) that the
    arguments name, detect the retrieval heads, save them (and the heatmap) and return them."""
    import torch

    from .retrieval_heads import detect_retrieval_heads

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model_and_tokenizer(model_args, device=device)
    proxy = values = None
    if args.proxy_dataset:
        proxy = load_any_dataset(args.proxy_dataset, args.split).to_list()
    elif args.values_dataset:
        texts = load_any_dataset(args.values_dataset, args.split)
        require_columns(texts, [args.values_column], "--values_dataset")
        check_text_column(texts, args.values_column, "--values_dataset")
        values = sentences(texts[args.values_column])
    else:
        raise ValueError("give --proxy_dataset (ready samples) or --values_dataset (text for the values)")
    heads = detect_retrieval_heads(
        model,
        tokenizer,
        proxy=proxy,
        values=values,
        top_fraction=args.top_fraction,
        method=args.method,
        drop_failed=not args.keep_failed,
        min_accuracy=args.min_accuracy,
        num_samples=args.num_samples,
        context_tokens=args.context_tokens,
        seed=args.seed,
        key_length=args.key_length,
    )
    heads.model_name = model_args.model_name_or_path
    heads.save(args.output_file)
    if args.heatmap_file:
        heads.plot_heatmap(args.heatmap_file)
    logger.warning(f"{len(heads.selected)} retrieval heads -> {args.output_file}: {heads.selected}")
    return heads
