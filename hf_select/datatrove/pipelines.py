"""Ready-made datatrove runs: reader -> scorer -> writer, on a Local, Slurm or Ray executor.

Example (AttentionInfluence over a folder of JSONL files, 4 tasks on 2 local workers)::

    from hf_select.datatrove import attention_influence_pipeline, make_executor

    pipeline = attention_influence_pipeline(
        "data/", "scored/", "HuggingFaceTB/SmolLM2-135M", heads="heads.json", checkpoint_dir="ckpt/"
    )
    make_executor(pipeline, "local", tasks=4, workers=2, logging_dir="logs/").run()

``executor="slurm"`` submits an array job (pass ``partition=``, ``time=``, ``gpus_per_task=`` ...);
``executor="ray"`` runs on the current Ray cluster (``ray.init`` / ``RAY_ADDRESS``). Input files are split
between tasks (task ``r`` reads files ``r, r + tasks, ...``), so use at least as many files as tasks.
"""

from __future__ import annotations

import os
from typing import Any

EXECUTORS = ("local", "slurm", "ray")


def _reader(input_folder: str, input_format: str, **kwargs):
    if input_format == "jsonl":
        from datatrove.pipeline.readers import JsonlReader

        return JsonlReader(input_folder, **kwargs)
    if input_format == "parquet":
        from datatrove.pipeline.readers import ParquetReader

        return ParquetReader(input_folder, **kwargs)
    raise ValueError(f"input_format must be 'jsonl' or 'parquet', got {input_format!r}")


def _writer(output: str, hub_dataset: bool):
    """ParquetWriter to a folder (local, s3://, hf://...), or HuggingFaceDatasetWriter to a Hub dataset repo."""
    if hub_dataset:
        from datatrove.pipeline.writers import HuggingFaceDatasetWriter

        return HuggingFaceDatasetWriter(output, expand_metadata=True)
    from datatrove.pipeline.writers import ParquetWriter

    return ParquetWriter(output, expand_metadata=True)


def attention_influence_pipeline(
    input_folder: str,
    output: str,
    model: str,
    heads,
    input_format: str = "jsonl",
    text_key: str = "text",
    id_key: str = "id",
    glob_pattern: str | None = None,
    limit: int = -1,
    hub_dataset: bool = False,
    scores_folder: str | None = None,
    domain_key: str | None = "domain",
    **scorer_kwargs: Any,
) -> list:
    """Reader -> :class:`~hf_select.datatrove.AttentionInfluenceScorer` -> writer.

    Args:
        input_folder: folder (local, ``s3://``, ``hf://datasets/...``) of JSONL or parquet files.
        output: output folder of ``${rank}.parquet`` files, or with ``hub_dataset`` a Hub dataset repo id.
        model, heads: the selector model and its retrieval heads (see the scorer).
        input_format: ``jsonl`` or ``parquet``.
        text_key, id_key, glob_pattern, limit: passed to the reader.
        scores_folder: also collect the scores per ``domain_key`` there for a second
            :class:`~hf_select.datatrove.TopFractionFilter` pass.
        **scorer_kwargs: the scorer's other arguments (``max_length``, ``batch_size``, ``checkpoint_dir`` ...).
    """
    from .selection import ScoreCollector
    from .steps import AttentionInfluenceScorer

    steps = [
        _reader(
            input_folder, input_format, text_key=text_key, id_key=id_key, glob_pattern=glob_pattern, limit=limit
        ),
        AttentionInfluenceScorer(model, heads, **scorer_kwargs),
    ]
    if scores_folder:
        steps.append(ScoreCollector(scores_folder, "ai_score", domain_key))
    steps.append(_writer(output, hub_dataset))
    return steps


def reference_loss_pipeline(
    input_folder: str,
    output: str,
    model: str,
    input_format: str = "parquet",
    glob_pattern: str | None = None,
    hub_dataset: bool = False,
    **scorer_kwargs: Any,
) -> list:
    """Packed training rows -> :class:`~hf_select.datatrove.ReferenceLossScorer` -> writer (one column per
    field: ``input_ids``, ``labels``, ``position_ids``, ``ref_loss`` ... as SLMTrainer reads them)."""
    from .steps import ReferenceLossScorer, packed_row_adapter

    return [
        _reader(input_folder, input_format, adapter=packed_row_adapter, glob_pattern=glob_pattern),
        ReferenceLossScorer(model, **scorer_kwargs),
        _writer(output, hub_dataset),
    ]


def make_executor(
    pipeline: list,
    executor: str = "local",
    tasks: int = 1,
    workers: int = -1,
    logging_dir: str | None = None,
    **kwargs: Any,
):
    """A datatrove executor for ``pipeline``.

    Sets ``num_threads`` of the scoring steps that have none, so workers never oversubscribe the CPUs: the
    Local executor gives each of its ``workers`` concurrent tasks ``cpu_count // workers`` torch threads;
    Slurm and Ray give each task ``cpus_per_task`` (default 1) threads.

    Args:
        pipeline: the steps (e.g. :func:`attention_influence_pipeline`).
        executor: ``local``, ``slurm`` (array job: needs ``partition`` and ``time``) or ``ray``.
        tasks: number of tasks (shards); the unit of datatrove's completion markers.
        workers: tasks running at once (-1: all).
        logging_dir: logs, stats and completion markers (must stay the same to resume).
        **kwargs: any other argument of the datatrove executor (``cpus_per_task``, ``gpus_per_task``,
            ``mem_per_cpu_gb``, ``sbatch_args``, ``venv_path``, ``ray_remote_kwargs`` ...).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        running = tasks if workers == -1 else min(workers, tasks)
        _set_threads(pipeline, max(1, (os.cpu_count() or 1) // max(running, 1)))
        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, **kwargs)
    _set_threads(pipeline, int(kwargs.get("cpus_per_task", 1)))
    if executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        missing = [k for k in ("partition", "time") if k not in kwargs]
        if missing:
            raise ValueError(f"the slurm executor needs {missing} (e.g. partition='gpu', time='12:00:00')")
        return SlurmPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, **kwargs)
    from datatrove.executor import RayPipelineExecutor

    return RayPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, **kwargs)


def _set_threads(pipeline: list, threads: int) -> None:
    for step in pipeline:
        if hasattr(step, "num_threads") and step.num_threads is None:
            step.num_threads = threads
