"""``hf-select score attention-influence``: score any dataset with AttentionInfluence (arXiv 2505.07293).

Parses :class:`~hf_select.attention_influence.AttentionInfluenceConfig` (every scorer parameter, the same on
every path) and runs :func:`hf_select.attention_influence.jobs.score_sharded` (one process or ``torchrun``;
resumable parts, rank 0 saves ``<output_dir>/scored``), or with ``--executor local|slurm|ray``
:func:`hf_select.datatrove.score_folder` on a folder of JSONL/parquet files.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..attention_influence.scorer import AttentionInfluenceConfig
from ..loading import DatasetSourceArguments, ModelArguments, load_model_and_tokenizer, write_output_manifest


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


CONFIG_CLASSES = (ModelArguments, DatasetSourceArguments, AttentionInfluenceConfig, ScoreAttentionInfluenceArguments)


def run(model_args, data_args, config: AttentionInfluenceConfig, args: ScoreAttentionInfluenceArguments) -> int:
    if not data_args.dataset_name_or_path or not config.heads:
        raise ValueError("--dataset_name_or_path and --heads_file (or --heads) are required")
    if args.executor:
        import yaml

        from ..datatrove.pipelines import score_folder

        if model_args.gguf_file or args.max_samples is not None:
            raise ValueError("--gguf_file and --max_samples are not supported with --executor")
        load = {k: v for k, v in asdict(model_args).items() if k not in ("model_name_or_path", "gguf_file")}
        load["tokenizer"] = load.pop("tokenizer_name_or_path")
        extra = yaml.safe_load(Path(args.executor_config).read_text()) or {} if args.executor_config else {}
        score_folder(data_args.dataset_name_or_path, args.output_dir, model_args.model_name_or_path, config,
                     args.executor, args.tasks, args.workers, args.map_batch_size, extra, device=args.device, **load)  # fmt: skip
        return 0
    from ..attention_influence.jobs import score_sharded

    dataset = data_args.load_dataset()
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    device = args.device or (f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if _cuda() else "cpu")
    model, tokenizer = load_model_and_tokenizer(model_args, device=device)
    scored = score_sharded(model, tokenizer, dataset, config, args.output_dir, args.part_size, args.map_batch_size,
                           data_args.dataset_name_or_path)  # fmt: skip
    if scored is not None:  # rank 0
        scored.save_to_disk(str(Path(args.output_dir) / "scored"))
        write_output_manifest(args.output_dir, ["scored"], "scored")  # --scored_dataset <output_dir> reads it
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
