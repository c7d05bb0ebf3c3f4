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

Resume: datatrove never re-runs a task that has its completion marker in ``logging_dir``, so
:func:`make_executor` first claims a local ``logging_dir`` for the run (:meth:`hf_select.resume.ResumeFolder.claim`):
the claim records a fingerprint of every step's settings (input folder, model and its weight files, the
scorer's config, output folder) and the number of tasks, and a run with other settings into the same folder is
refused with the settings that differ, instead of printing "Not doing anything" over stale scores. A weight
folder retrained in place is seen by its files' sizes and times; a Hub model by its ``revision``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datatrove.executor import LocalPipelineExecutor

from ..attention_influence.scorer import AttentionInfluenceConfig
from ..fingerprint import fingerprint
from ..resume import ResumeFolder
from ..threads import thread_count

EXECUTORS = ("local", "slurm", "ray")
RUN_CLAIM = "hf_select_run.json"

def make_reader(input_folder: str, input_format: str, **kwargs):
    """JsonlReader or ParquetReader of ``input_folder`` (``kwargs``: the reader's other arguments)."""
    if input_format == "jsonl":
        from datatrove.pipeline.readers import JsonlReader

        return JsonlReader(input_folder, **kwargs)
    if input_format == "parquet":
        from datatrove.pipeline.readers import ParquetReader

        return ParquetReader(input_folder, **kwargs)
    raise ValueError(f"input_format must be 'jsonl' or 'parquet', got {input_format!r}")

def make_writer(output: str, hub_dataset: bool):
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
    heads=None,
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
    """Reader -> prefilter steps -> :class:`~hf_select.datatrove.AttentionInfluenceScorer` -> writer.

    The prefilter steps (:func:`~hf_select.datatrove.prefilter_steps`: exact dedup within the task, datatrove's
    Gopher filters) run when the scorer's config has a ``prefilter``; they flag, never drop, so every input
    document reaches the output (a dropped one with a null ``ai_score`` and its ``ai_filter_reason``).

    Args:
        input_folder: folder (local, ``s3://``, ``hf://datasets/...``) of JSONL or parquet files.
        output: output folder of ``${rank}.parquet`` files, or with ``hub_dataset`` a Hub dataset repo id.
        model, heads: the selector model and its retrieval heads (see the scorer; heads None: those of
            ``config``).
        input_format: ``jsonl`` or ``parquet``.
        text_key, id_key, glob_pattern, limit: passed to the reader.
        scores_folder: also collect the scores per ``domain_key`` there for a second
            :class:`~hf_select.datatrove.TopFractionFilter` pass.
        **scorer_kwargs: the scorer's other arguments (``config``, an
            :class:`~hf_select.attention_influence.AttentionInfluenceConfig`, ``checkpoint_dir`` ...).
    """
    from .selection import ScoreCollector
    from .steps import AttentionInfluenceScorer, prefilter_steps

    scorer = AttentionInfluenceScorer(model, heads, **scorer_kwargs)
    steps = [
        make_reader(
            input_folder, input_format, text_key=text_key, id_key=id_key, glob_pattern=glob_pattern, limit=limit
        ),
        *prefilter_steps(scorer.ai_config),
        scorer,
    ]
    if scores_folder:
        steps.append(ScoreCollector(scores_folder, "ai_score", domain_key))
    steps.append(make_writer(output, hub_dataset))
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
        make_reader(input_folder, input_format, adapter=packed_row_adapter, glob_pattern=glob_pattern),
        ReferenceLossScorer(model, **scorer_kwargs),
        make_writer(output, hub_dataset),
    ]

def make_executor(
    pipeline: list,
    executor: str = "local",
    tasks: int = 1,
    workers: int = -1,
    logging_dir: str | None = None,
    **kwargs: Any,
):
    """A datatrove executor for ``pipeline``, after claiming ``logging_dir`` for this run (see the module docs).

    Sets ``num_threads`` of the scoring steps that have none, so workers never oversubscribe the CPUs: the
    Local executor gives each of its ``workers`` concurrent tasks :func:`hf_select.threads.thread_count` torch
    threads (the cores of this process's affinity and cgroup quota, shared); Slurm and Ray give each task
    ``cpus_per_task`` (default 1) threads.

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
    if executor == "slurm":
        missing = [k for k in ("partition", "time") if k not in kwargs]
        if missing:
            raise ValueError(f"the slurm executor needs {missing} (e.g. partition='gpu', time='12:00:00')")
    if executor == "local":
        running = tasks if workers == -1 else min(workers, tasks)
        _set_threads(pipeline, thread_count(max(running, 1)))
    else:
        _set_threads(pipeline, int(kwargs.get("cpus_per_task", 1)))
    claim_run(pipeline, tasks, logging_dir)
    if executor == "local":
        return LocalExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, **kwargs)
    if executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

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
        from ..interrupt import die_with_parent

        main_pid = getattr(self, "main_pid", None)
        if main_pid is not None and os.getpid() != main_pid:
            die_with_parent(main_pid)
        return super()._launch_run_for_rank(rank, ranks_q, completed, completed_lock)


def _set_threads(pipeline: list, threads: int) -> None:
    for step in pipeline:
        if hasattr(step, "num_threads") and step.num_threads is None:
            step.num_threads = threads

def _weight_files(model: str) -> list | None:
    """Name, size and modification time of a local model folder's files (None for a Hub id)."""
    folder = Path(model)
    if not folder.is_dir():
        return None
    return sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir() if f.is_file())

def run_settings(pipeline: list, tasks: int) -> dict[str, Any]:
    """What identifies a datatrove run for resuming: every step's settings, flattened as ``<step>.<name>``."""
    settings: dict[str, Any] = {"tasks": tasks}
    for i, step in enumerate(pipeline):
        prefix = f"{i}.{type(step).__name__}"
        folder = getattr(step, "data_folder", None) or getattr(step, "output_folder", None)
        if folder is not None:
            settings[f"{prefix}.folder"] = getattr(folder, "path", str(folder))
        for name in ("glob_pattern", "text_key", "id_key", "limit"):
            if hasattr(step, name):
                settings[f"{prefix}.{name}"] = getattr(step, name)
        if hasattr(step, "model_name"):
            settings[f"{prefix}.model"] = step.model_name
            settings[f"{prefix}.weights"] = _weight_files(step.model_name)
            for name in ("tokenizer_name", "revision", "docs_per_chunk"):
                settings[f"{prefix}.{name}"] = getattr(step, name)
            for name, value in step.config().items():
                settings[f"{prefix}.{name}"] = value
    return settings

def claim_run(pipeline: list, tasks: int, logging_dir: str | None) -> None:
    """Claim a local ``logging_dir`` for this run or refuse a run with other settings (module docs)."""
    if logging_dir is None or "://" in str(logging_dir):
        return
    settings = run_settings(pipeline, tasks)
    ResumeFolder(logging_dir, fingerprint(settings), what="datatrove results").claim(settings, RUN_CLAIM)

def release_run(logging_dir: str) -> None:
    """Free ``logging_dir`` for another run: remove the claim and datatrove's completion markers."""
    ResumeFolder(logging_dir, "").release(RUN_CLAIM)
    for marker in (Path(logging_dir) / "completions").glob("*"):
        marker.unlink()

def guess_input_format(folder: str) -> str:
    """``parquet`` or ``jsonl``: the format of the files datatrove would read in ``folder``."""
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

def _scored_documents(logging_dir: Path) -> int | None:
    """Documents the scoring step saw over all tasks, from datatrove's merged ``stats.json`` (None without)."""
    import json

    stats = logging_dir / "stats.json"
    if not stats.exists():
        return None
    steps = json.loads(stats.read_text())
    scorer = [step["stats"] for step in steps if "SCORER" in step.get("name", "")]
    if not scorer:
        return None
    documents = scorer[0].get("documents", 0)
    return int(documents["total"] if isinstance(documents, dict) else documents)

def score_folder(
    input_folder: str,
    output_dir: str,
    model: str,
    config: AttentionInfluenceConfig,
    executor: str = "local",
    tasks: int = 1,
    workers: int = -1,
    docs_per_chunk: int = 1000,
    executor_kwargs: dict[str, Any] | None = None,
    **load_kwargs: Any,
) -> Path:
    """Score a folder of JSONL or parquet files with AttentionInfluence on a datatrove executor.

    ``input_folder`` is local, ``s3://`` or ``hf://datasets/<repo>``; scores go to ``<output_dir>/scored/
    <rank>.parquet``, datatrove's logs, stats and completion markers to ``<output_dir>/logs``, in-task
    checkpoints to ``<output_dir>/checkpoints``. Re-running the same call resumes; a call with other settings
    is refused (:func:`claim_run`). A local run that scores no document is an error and leaves the folder free
    for a corrected re-run.

    Args:
        config: the scorer's :class:`~hf_select.attention_influence.AttentionInfluenceConfig` (its
            ``text_column`` is the reader's text key).
        executor, tasks, workers, executor_kwargs: see :func:`make_executor`.
        docs_per_chunk: documents sorted by length together, and the unit of the in-task checkpoint.
        **load_kwargs: how the workers load the model (``tokenizer``, ``revision``, ``dtype``,
            ``attn_implementation``, ``trust_remote_code``, ``device``).
    """
    out = Path(output_dir)
    pipeline = attention_influence_pipeline(
        input_folder,
        str(out / "scored"),
        model,
        input_format=guess_input_format(input_folder),
        text_key=config.text_column,
        config=config,
        docs_per_chunk=docs_per_chunk,
        checkpoint_dir=str(out / "checkpoints"),
        **load_kwargs,
    )
    logs = out / "logs"
    make_executor(pipeline, executor, tasks=tasks, workers=workers, logging_dir=str(logs), **(executor_kwargs or {})).run()
    if executor == "local" and _scored_documents(logs) == 0:
        release_run(str(logs))
        raise ValueError(
            f"no document was read from {input_folder} (datatrove reads .jsonl(.gz) or .parquet files with a "
            f"{config.text_column!r} field); nothing was kept, fix the input and run again"
        )
    return out
