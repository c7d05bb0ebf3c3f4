"""Score a corpus with hf-select on datatrove: Local, Slurm array job or Ray cluster, resumable.

AttentionInfluence (arXiv 2505.07293), then optionally the top fraction per domain in a second pass::

    # one machine, 4 tasks on 2 worker processes
    python examples/datatrove_scoring.py ai --input data/ --output runs/ai --model HuggingFaceTB/SmolLM2-135M \
        --heads heads.json --executor local --tasks 4 --workers 2 --select_fraction 0.2

    # Slurm: a 64-task array job, one GPU per task; the selection pass waits for it (afterok dependency)
    python examples/datatrove_scoring.py ai --input s3://bucket/corpus/ --output /shared/runs/ai \
        --model HuggingFaceTB/SmolLM2-135M --heads heads.json --executor slurm --tasks 64 --workers 16 \
        --partition gpu --time 12:00:00 --gpus_per_task 1 --cpus_per_task 8 --venv_path /shared/venv/bin/activate

    # Ray: on the cluster that RAY_ADDRESS (or `ray start --head`) names
    python examples/datatrove_scoring.py ai ... --executor ray --tasks 64 --workers 8 --gpus_per_task 1

RHO-1 reference losses of packed training rows (``input_ids``, ``labels``, ``position_ids`` in parquet or
JSONL, e.g. ``hf_select.commands.train_slm.training_rows(...).to_parquet(...)``)::

    python examples/datatrove_scoring.py ref --input rows/ --output runs/ref --model my-reference-model \
        --executor local --tasks 4 --workers 2

Outputs: ``<output>/scored/*.parquet`` (one column per field), ``<output>/logs`` (datatrove logs, stats,
completion markers), ``<output>/checkpoints`` (in-task chunks). Re-running the same command resumes: finished
tasks are skipped, killed tasks restore their scored chunks. ``--output`` and the checkpoints must be on a file
system that every node sees. Status: the Local executor is tested in CI
(tests/hf_select/datatrove); the Slurm and Ray configurations are written to datatrove's API but untested
here (no cluster).
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=("ai", "ref"), help="ai: AttentionInfluence; ref: RHO-1 reference losses")
    parser.add_argument("--input", required=True, help="folder of JSONL or parquet files (local, s3://, hf://)")
    parser.add_argument("--input_format", default=None, choices=("jsonl", "parquet"), help="default: guessed")
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", required=True, help="Hub id or folder (each worker loads it)")
    parser.add_argument("--heads", help="ai: RetrievalHeads JSON from hf-select detect-heads")
    parser.add_argument("--max_length", type=int, default=2048)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--docs_per_chunk", type=int, default=1000, help="length-sorting and checkpoint unit")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--attn_implementation", default="sdpa")
    parser.add_argument("--select_fraction", type=float, default=None, help="ai: keep the top fraction per domain")
    parser.add_argument("--domain_key", default="domain")
    parser.add_argument("--executor", default="local", choices=("local", "slurm", "ray"))
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--workers", type=int, default=-1)
    parser.add_argument("--partition", default=None, help="slurm")
    parser.add_argument("--time", default="24:00:00", help="slurm: time limit per array task")
    parser.add_argument("--venv_path", default=None, help="slurm: script that activates the environment")
    parser.add_argument("--cpus_per_task", type=int, default=8)
    parser.add_argument("--gpus_per_task", type=int, default=0)
    parser.add_argument("--mem_per_cpu_gb", type=float, default=4)
    args = parser.parse_args()

    from hf_select.datatrove import (
        TopFractionFilter,
        attention_influence_pipeline,
        make_executor,
        reference_loss_pipeline,
    )
    from hf_select.datatrove.pipelines import _input_format, _reader, _writer

    out = Path(args.output)
    input_format = args.input_format or _input_format(args.input)
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
        pipeline = reference_loss_pipeline(args.input, str(out / "scored"), args.model, input_format, **common)
    kwargs = executor_kwargs(args)
    scoring = make_executor(
        pipeline, args.executor, tasks=args.tasks, workers=args.workers, logging_dir=str(out / "logs"), **kwargs
    )
    if args.select_fraction is None or args.method != "ai":
        scoring.run()
        return
    # second pass: same task layout (task r reads the scored file of rank r), no model, CPU only
    select = [
        _reader(str(out / "scored"), "parquet"),
        TopFractionFilter(scores_folder, args.select_fraction, "ai_score", args.domain_key),
        _writer(str(out / "selected"), hub_dataset=False),
    ]
    if args.executor == "local":
        scoring.run()
        make_executor(select, "local", tasks=args.tasks, workers=args.workers, logging_dir=str(out / "logs_select")).run()
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
    main()
