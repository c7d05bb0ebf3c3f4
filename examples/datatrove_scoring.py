"""Score a corpus with hf-select on datatrove: Local, Slurm array job or Ray cluster, resumable.

AttentionInfluence (arXiv 2505.07293), then optionally the top fraction per domain in a second pass::

    # one machine, 4 tasks on 2 worker processes
    python examples/datatrove_scoring.py --method ai --input data/ --output runs/ai --model HuggingFaceTB/SmolLM2-135M \
        --heads heads.json --executor local --tasks 4 --workers 2 --select_fraction 0.2

    # Slurm: a 64-task array job, one GPU per task; the selection pass waits for it (afterok dependency)
    python examples/datatrove_scoring.py --method ai --input s3://bucket/corpus/ --output /shared/runs/ai \
        --model HuggingFaceTB/SmolLM2-135M --heads heads.json --executor slurm --tasks 64 --workers 16 \
        --partition gpu --time 12:00:00 --gpus_per_task 1 --cpus_per_task 8 --venv_path /shared/venv/bin/activate

    # Ray: on the cluster that RAY_ADDRESS (or `ray start --head`) names
    python examples/datatrove_scoring.py --method ai ... --executor ray --tasks 64 --workers 8 --gpus_per_task 1

RHO-1 reference losses of packed training rows (``input_ids``, ``labels``, ``position_ids`` in parquet or
JSONL, e.g. ``hf_select.slm.jobs.training_rows(...).to_parquet(...)``)::

    python examples/datatrove_scoring.py --method ref --input rows/ --output runs/ref --model my-reference-model \
        --executor local --tasks 4 --workers 2

Outputs: ``<output>/scored/*.parquet`` (one column per field), ``<output>/logs`` (datatrove logs, stats,
completion markers), ``<output>/checkpoints`` (in-task chunks). Re-running the same command resumes: finished
tasks are skipped, killed tasks restore their scored chunks. ``--output`` and the checkpoints must be on a file
system that every node sees. Status: the Local executor is tested in CI
(tests/hf_select/datatrove); the Slurm and Ray configurations are written to datatrove's API but untested
here (no cluster).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def executor_kwargs(args) -> dict:
    """The executor's arguments beyond pipeline / tasks / workers / logging_dir."""
    if args.executor == "slurm":
        return {
            "partition": args.partition,
            "time": args.time,
            "cpus_per_task": args.cpus_per_task,
            "gpus_per_task": args.gpus_per_task,
            "mem_per_cpu_gb": args.mem_per_cpu_gb,
            "job_name": f"hf-select-{args.method}",
            "venv_path": args.venv_path,
        }
    if args.executor == "ray":
        return {
            "cpus_per_task": args.cpus_per_task,
            "gpus_per_task": args.gpus_per_task,
            "mem_per_cpu_gb": args.mem_per_cpu_gb,
        }
    return {}


@dataclass
class ScriptArguments:
    """The script's options (parsed with ``HfArgumentParser``, like TRL's example scripts)."""

    method: str = field(
        metadata={"help": "ai: AttentionInfluence; ref: RHO-1 reference losses", "choices": ["ai", "ref"]}
    )
    input: str = field(metadata={"help": "Folder of JSONL or parquet files (local, s3://, hf://)."})
    output: str = field(metadata={"help": "Output folder: scored/, selected/, checkpoints/, logs/."})
    model: str = field(metadata={"help": "Hub id or folder (each worker loads it)."})
    input_format: str | None = field(default=None, metadata={"help": "jsonl or parquet (default: guessed)."})
    heads: str | None = field(
        default=None, metadata={"help": "ai: RetrievalHeads JSON from hf-select detect-heads."}
    )
    max_length: int = field(default=2048, metadata={"help": "ai: tokens scored per document."})
    batch_size: int = field(default=8, metadata={"help": "Documents per forward."})
    docs_per_chunk: int = field(default=1000, metadata={"help": "Length-sorting and checkpoint unit."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype (auto, float32, bfloat16)."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "transformers attention kernel."})
    select_fraction: float | None = field(
        default=None, metadata={"help": "ai: keep the top fraction per domain."}
    )
    domain_key: str = field(default="domain", metadata={"help": "Metadata key of the domain."})
    executor: str = field(
        default="local", metadata={"help": "local, slurm or ray.", "choices": ["local", "slurm", "ray"]}
    )
    tasks: int = field(default=1, metadata={"help": "datatrove tasks (shards, the unit of resumption)."})
    workers: int = field(default=-1, metadata={"help": "Tasks running at once (-1: all)."})
    partition: str | None = field(default=None, metadata={"help": "slurm: partition."})
    time: str = field(default="24:00:00", metadata={"help": "slurm: time limit per array task."})
    venv_path: str | None = field(
        default=None, metadata={"help": "slurm: script that activates the environment."}
    )
    cpus_per_task: int = field(default=8, metadata={"help": "slurm/ray: CPUs per task."})
    gpus_per_task: int = field(default=0, metadata={"help": "slurm/ray: GPUs per task."})
    mem_per_cpu_gb: float = field(default=4, metadata={"help": "slurm/ray: memory per CPU in GB."})


def main(args: ScriptArguments) -> None:
    from hf_select.datatrove import (
        TopFractionFilter,
        attention_influence_pipeline,
        make_executor,
        reference_loss_pipeline,
    )
    from hf_select.datatrove.pipelines import guess_input_format, make_reader, make_writer

    out = Path(args.output)
    input_format = args.input_format or guess_input_format(args.input)
    common = {
        "batch_size": args.batch_size,
        "docs_per_chunk": args.docs_per_chunk,
        "checkpoint_dir": str(out / "checkpoints"),
        "dtype": args.dtype,
        "attn_implementation": args.attn_implementation,
    }
    scores_folder = str(out / "score_lists") if args.select_fraction is not None else None
    if args.method == "ai":
        if not args.heads:
            raise SystemExit("ai needs --heads (hf-select detect-heads writes them)")
        pipeline = attention_influence_pipeline(
            args.input,
            str(out / "scored"),
            args.model,
            args.heads,
            input_format=input_format,
            max_length=args.max_length,
            scores_folder=scores_folder,
            domain_key=args.domain_key,
            **common,
        )
    else:
        pipeline = reference_loss_pipeline(
            args.input, str(out / "scored"), args.model, input_format, **common
        )
    kwargs = executor_kwargs(args)
    scoring = make_executor(
        pipeline,
        args.executor,
        tasks=args.tasks,
        workers=args.workers,
        logging_dir=str(out / "logs"),
        **kwargs,
    )
    if args.select_fraction is None or args.method != "ai":
        scoring.run()
        return
    # second pass: same task layout (task r reads the scored file of rank r), no model, CPU only
    select = [
        make_reader(str(out / "scored"), "parquet"),
        TopFractionFilter(scores_folder, args.select_fraction, "ai_score", args.domain_key),
        make_writer(str(out / "selected"), hub_dataset=False),
    ]
    if args.executor == "local":
        scoring.run()
        make_executor(
            select, "local", tasks=args.tasks, workers=args.workers, logging_dir=str(out / "logs_select")
        ).run()
    else:  # Slurm / Ray: the selection job depends on the scoring job and is launched with it
        kwargs["gpus_per_task"] = 0
        make_executor(
            select,
            args.executor,
            tasks=args.tasks,
            workers=args.workers,
            logging_dir=str(out / "logs_select"),
            depends=scoring,
            **kwargs,
        ).run()


if __name__ == "__main__":
    from transformers import HfArgumentParser

    main(*HfArgumentParser(ScriptArguments).parse_args_into_dataclasses())
