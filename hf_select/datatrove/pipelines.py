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

from datatrove.executor import LocalPipelineExecutor

from ..interrupt import die_with_parent

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
    check_task_counts(tasks, workers)
    if executor == "local":
        running = tasks if workers == -1 else min(workers, tasks)
        _set_threads(pipeline, max(1, (os.cpu_count() or 1) // max(running, 1)))
        return LocalExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, **kwargs)
    _set_threads(pipeline, int(kwargs.get("cpus_per_task", 1)))
    if executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        missing = [k for k in ("partition", "time") if k not in kwargs]
        if missing:
            raise ValueError(f"the slurm executor needs {missing} (e.g. partition='gpu', time='12:00:00')")
        return SlurmPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, **kwargs)
    from datatrove.executor import RayPipelineExecutor

    return RayPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, **kwargs)


def check_task_counts(tasks, workers) -> None:
    """``tasks`` >= 1 and ``workers`` >= 1 or -1 (as many as tasks); datatrove runs nothing on 0 tasks."""
    if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
        raise ValueError(f"--tasks must be an integer >= 1, got {tasks!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or (workers < 1 and workers != -1):
        raise ValueError(f"--workers must be an integer >= 1, or -1 for as many as tasks, got {workers!r}")


class LocalExecutor(LocalPipelineExecutor):
    """datatrove's ``LocalPipelineExecutor`` whose pool workers die with the main process
    (:func:`hf_select.interrupt.die_with_parent`): a ``kill -9`` of the main process stops every task at once
    instead of leaving workers scoring and writing; a re-run redoes the unfinished tasks."""

    def run(self):
        self.main_pid = os.getpid()
        return super().run()

    def _launch_run_for_rank(self, rank, ranks_q, completed=None, completed_lock=None):
        main_pid = getattr(self, "main_pid", None)
        if main_pid is not None and os.getpid() != main_pid:
            die_with_parent(main_pid)
        return super()._launch_run_for_rank(rank, ranks_q, completed, completed_lock)


def _set_threads(pipeline: list, threads: int) -> None:
    for step in pipeline:
        if hasattr(step, "num_threads") and step.num_threads is None:
            step.num_threads = threads


def _input_format(folder: str) -> str:
    """``jsonl`` or ``parquet``: the files of ``folder``; a ``save_to_disk`` folder (Arrow) is refused."""
    from datatrove.io import get_datafolder

    files = get_datafolder(folder).list_files()
    names = {f.rsplit("/", 1)[-1] for f in files}
    if "dataset_dict.json" in names or ("state.json" in names and any(f.endswith(".arrow") for f in files)):
        raise ValueError(
            f"{folder} is a save_to_disk folder (Arrow files); --executor reads folders of .jsonl(.gz) or "
            ".parquet files: write it with Dataset.to_parquet / to_json into a folder, or score it without "
            "--executor"
        )
    if any(f.endswith(".parquet") for f in files):
        return "parquet"
    if any(".jsonl" in f or f.endswith(".json") for f in files):
        return "jsonl"
    raise ValueError(f"{folder} holds no .jsonl(.gz) or .parquet files for a datatrove reader")


def run_attention_influence_command(model_args, args) -> int:
    """``hf-select score attention-influence --executor local|slurm|ray``: reader -> scorer -> ParquetWriter.

    ``--dataset_name_or_path`` is a folder (local, ``s3://``, ``hf://datasets/<repo>``) of JSONL or parquet files;
    results go to ``<output_dir>/scored/<rank>.parquet``, datatrove's logs, stats and completion markers to
    ``<output_dir>/logs``, in-task checkpoints to ``<output_dir>/checkpoints``. Re-running the same command
    resumes. ``--executor_config`` (JSON or YAML) holds the executor's other arguments (Slurm: ``partition``,
    ``time``, ``gpus_per_task``, ``cpus_per_task``, ``sbatch_args``, ``venv_path`` ...; Ray: ``cpus_per_task``,
    ``gpus_per_task``, ``ray_remote_kwargs`` ...).
    """
    from pathlib import Path

    if not args.dataset_name_or_path or not args.heads_file:
        raise ValueError("--dataset_name_or_path and --heads_file are required")
    if getattr(model_args, "gguf_file", None):
        raise ValueError("--gguf_file is not supported with --executor: convert the model to safetensors first")
    if args.max_samples is not None:
        raise ValueError("--max_samples is not supported with --executor: point --dataset_name_or_path at fewer files")
    check_task_counts(args.tasks, args.workers)
    extra: dict[str, Any] = {}
    if args.executor_config:
        import yaml

        extra = yaml.safe_load(Path(args.executor_config).read_text()) or {}
    out = Path(args.output_dir)
    pipeline = attention_influence_pipeline(
        args.dataset_name_or_path,
        str(out / "scored"),
        model_args.model_name_or_path,
        args.heads_file,
        input_format=_input_format(args.dataset_name_or_path),
        text_key=args.text_column,
        max_length=args.max_length,
        batch_size=args.batch_size,
        docs_per_chunk=args.map_batch_size,
        checkpoint_dir=str(out / "checkpoints"),
        tokenizer=model_args.tokenizer_name_or_path,
        revision=model_args.revision,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=model_args.trust_remote_code,
        device=args.device,
    )
    executor = make_executor(
        pipeline, args.executor, tasks=args.tasks, workers=args.workers, logging_dir=str(out / "logs"), **extra
    )
    executor.run()
    return 0
