"""``hf-select eval`` as a library call: the options (:class:`EvalArguments`) and :func:`evaluate_job`, which
loads the model on this process's device (data-parallel under accelerate/torchrun), runs the harness and, on
request, the lm-evaluation-harness agreement check."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_select.loading import ModelArguments, load_model_and_tokenizer


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


def _device():
    import os

    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        return PartialState().device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def evaluate_job(model_args: ModelArguments, args: EvalArguments) -> tuple[str | None, bool]:
    """Evaluate ``model_args``'s model on ``args.tasks`` (results written to ``args.output_dir``). Returns the
    report to print (None on ranks other than 0) and whether lm-evaluation-harness agreed (True when not asked)."""
    import torch.distributed as dist

    from .harness import evaluate, markdown_table

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
    if dist.is_initialized() and dist.get_rank() != 0:
        return None, True
    report = markdown_table(output)
    if not args.lm_eval_agreement:
        return report, True
    from .lm_eval_adapter import agreement_check, format_agreement
    from .tasks import load_tasks

    tasks = [t for t in load_tasks(args.tasks) if t.type == "multiple_choice"]
    agreement = agreement_check(model, tokenizer, tasks, args.num_fewshot, args.batch_size, args.limit, args.prefix)
    return report + "\n" + format_agreement(agreement), all(r["agree"] for r in agreement.values())
