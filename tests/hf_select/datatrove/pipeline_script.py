"""Run an hf-select datatrove pipeline (Local or Ray executor) from the command line, for the tests.

    python pipeline_script.py ai|ref INPUT_DIR RUN_DIR MODEL_DIR [--slow_ranks 2,3] [--tasks 4 --workers 2]
        [--executor ray] [--pid_dir DIR]

Writes ``RUN_DIR/output`` (parquet), ``RUN_DIR/logs`` (datatrove logs, stats, completion markers) and
``RUN_DIR/ckpt`` (in-task checkpoints). ``--slow_ranks`` sleeps after each scored document of those tasks, so
that a test can kill the run while they are half done; ``--pid_dir`` records each task's process id and its
parent's (under ``--executor ray``, which starts a local 2-CPU cluster, the parent is the Ray worker: datatrove
runs the rank in a process of the worker's pool).
"""

import argparse
import time

HEADS = [(1, 0), (1, 2)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("ai", "ref"))
    parser.add_argument("input_dir")
    parser.add_argument("run_dir")
    parser.add_argument("model_dir")
    parser.add_argument("--slow_ranks", default="")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--docs_per_chunk", type=int, default=4)
    parser.add_argument("--start_method", default="fork", help="fork: workers inherit the imports (fast tests)")
    parser.add_argument("--executor", default="local", choices=("local", "ray"))
    parser.add_argument("--pid_dir", default=None, help="each task writes 'PID PARENT_PID' to PID_DIR/<rank>")
    args = parser.parse_args()

    # imported before the pool starts, so that forked workers need not import torch/transformers again
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    import hf_select.attention_influence
    import hf_select.loading
    import hf_select.slm.reference_losses  # noqa: F401
    from hf_select.datatrove import attention_influence_pipeline, make_executor, reference_loss_pipeline

    output, ckpt = f"{args.run_dir}/output", f"{args.run_dir}/ckpt"
    if args.kind == "ai":
        pipeline = attention_influence_pipeline(
            args.input_dir,
            output,
            args.model_dir,
            HEADS,
            max_length=24,
            batch_size=3,
            docs_per_chunk=args.docs_per_chunk,
            checkpoint_dir=ckpt,
        )
    else:
        pipeline = reference_loss_pipeline(
            args.input_dir,
            output,
            args.model_dir,
            input_format="jsonl",
            batch_size=3,
            docs_per_chunk=args.docs_per_chunk,
            checkpoint_dir=ckpt,
        )
    slow = {int(r) for r in args.slow_ranks.split(",") if r}

    pid_dir = args.pid_dir

    def slow_down(data, rank: int = 0, world_size: int = 1):
        if pid_dir:
            import os

            os.makedirs(pid_dir, exist_ok=True)
            with open(f"{pid_dir}/{rank}", "w") as f:  # the task's process and its parent (a Ray worker)
                f.write(f"{os.getpid()} {os.getppid()}")
        for doc in data:
            if rank in slow:
                time.sleep(0.4)
            yield doc

    pipeline.insert(2, slow_down)
    if args.executor == "ray":  # a local Ray cluster of 2 CPUs, one per task
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        extra = {"cpus_per_task": 1, "mem_per_cpu_gb": 0.5}
    else:
        extra = {"start_method": args.start_method}
    executor = make_executor(
        pipeline, args.executor, tasks=args.tasks, workers=args.workers, logging_dir=f"{args.run_dir}/logs", **extra
    )
    executor.run()
    if args.executor == "ray":
        ray.shutdown()


if __name__ == "__main__":
    main()
