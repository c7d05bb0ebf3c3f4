"""``hf-select eval``: evaluate a model id or folder on harness tasks (data-parallel under accelerate/torchrun).

Example::

    hf-select eval --model_name_or_path out/students/slm --tasks world/eval_tasks --num_fewshot 0 \\
        --output_dir out/eval/slm
    accelerate launch -m hf_select.cli eval --model_name_or_path ... --tasks ...   # data-parallel
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..loading import ModelArguments, load_model_and_tokenizer


@dataclass
class EvalArguments:
    """What to evaluate and how (see ``eval/TASK_FORMAT.md`` for task files)."""

    tasks: list[str] = field(
        default_factory=list, metadata={"help": "Task files (.yaml/.json) or folders of task files."}
    )
    num_fewshot: int | None = field(
        default=None, metadata={"help": "Few-shot examples per item (default: each task's num_fewshot)."}
    )
    batch_size: int = field(
        default=16, metadata={"help": "Rows (contexts with their continuations) per batch."}
    )
    prefix: str | None = field(
        default=None,
        metadata={"help": "Conditional-inference prefix before every prompt (MeCo), e.g. 'URL: x\\n\\n'."},
    )
    limit: int | None = field(
        default=None, metadata={"help": "Evaluate only the first N items of each task."}
    )
    max_length: int | None = field(default=None, metadata={"help": "Context window (default: the model's)."})
    share_context: bool = field(
        default=True,
        metadata={"help": "Score all continuations of a context in one row (off for flash-attention)."},
    )
    log_samples: bool = field(default=False, metadata={"help": "Also write per-item outputs."})
    output_dir: str = field(
        default="eval_results", metadata={"help": "Where results.json and results.md go."}
    )
    lm_eval_agreement: bool = field(
        default=False,
        metadata={
            "help": "Also run lm-evaluation-harness on the multiple-choice tasks and print the agreement."
        },
    )


CONFIG_CLASSES = (ModelArguments, EvalArguments)


def _device():
    import os

    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        return PartialState().device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run(model_args: ModelArguments, args: EvalArguments) -> int:
    from hf_select.eval import evaluate, markdown_table

    if not args.tasks:
        raise ValueError("--tasks is required (task files or folders)")
    model, tokenizer = load_model_and_tokenizer(model_args, device=_device())
    output = evaluate(
        model,
        tokenizer,
        args.tasks,
        num_fewshot=args.num_fewshot,
        batch_size=args.batch_size,
        prefix=args.prefix,
        limit=args.limit,
        max_length=args.max_length,
        share_context=args.share_context,
        log_samples=args.log_samples,
        output_dir=args.output_dir,
        model_name=model_args.model_name_or_path,
    )
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_rank() != 0:
        return 0
    print(markdown_table(output))
    if args.lm_eval_agreement:
        from hf_select.eval import agreement_check, format_agreement, load_tasks

        tasks = [t for t in load_tasks(args.tasks) if t.type == "multiple_choice"]
        report = agreement_check(
            model, tokenizer, tasks, args.num_fewshot, args.batch_size, args.limit, args.prefix
        )
        print(format_agreement(report))
        return 0 if all(r["agree"] for r in report.values()) else 1
    return 0
