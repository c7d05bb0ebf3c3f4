"""``hf-select score attention-influence``: score any dataset with AttentionInfluence (arXiv 2505.07293).

Parses :class:`~hf_select.attention_influence.AttentionInfluenceConfig` (every scorer parameter, the same on
every path) and runs :func:`hf_select.attention_influence.jobs.score_sharded` (one process or ``torchrun``;
resumable parts, rank 0 saves ``<output_dir>/scored``), or with ``--executor local|slurm|ray``
:func:`hf_select.datatrove.score_folder` on a folder of JSONL/parquet files.
"""

from __future__ import annotations

from ..attention_influence.jobs import ScoreAttentionInfluenceArguments, executor_options, score_to_disk
from ..attention_influence.scorer import AttentionInfluenceConfig
from ..loading import DatasetSourceArguments, ModelArguments

CONFIG_CLASSES = (ModelArguments, DatasetSourceArguments, AttentionInfluenceConfig, ScoreAttentionInfluenceArguments)


def run(model_args, data_args, config: AttentionInfluenceConfig, args: ScoreAttentionInfluenceArguments) -> int:
    if not data_args.dataset_name_or_path or not config.heads:
        raise ValueError("--dataset_name_or_path and --heads_file (or --heads) are required")
    if args.executor:
        from ..datatrove.pipelines import score_folder

        options = executor_options(model_args, args)
        score_folder(data_args.dataset_name_or_path, args.output_dir, model_args.model_name_or_path, config,
                     args.executor, args.tasks, args.workers, args.map_batch_size, options.pop("executor_kwargs"),
                     **options)  # fmt: skip
        return 0
    score_to_disk(model_args, data_args, config, args)
    return 0
