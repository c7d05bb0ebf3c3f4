"""Evaluate a causal LM on harness tasks, data-parallel under ``accelerate launch`` (or ``torchrun``).

    accelerate launch --num_processes 8 examples/accelerate_eval.py \\
        --model_name_or_path HuggingFaceTB/SmolLM2-360M --tasks path/to/eval_tasks/ --output_dir eval/
    python examples/accelerate_eval.py --model_name_or_path ... --tasks ...   # one process

Each process scores its share of the rows; every process gets the full results and the main process writes
``results.json`` and ``results.md``. ``--prefix "URL: www.sciencestudyquiz.com\\n\\n"`` evaluates a MeCo model
with a conditioning prefix. Task format: eval/TASK_FORMAT.md; metrics: docs/evaluation.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import HfArgumentParser


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(metadata={"help": "Model to evaluate (Hub id or folder)."})
    tasks: list[str] = field(metadata={"help": "Task files (.yaml/.json) or folders of them."})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})
    num_fewshot: int | None = field(default=None, metadata={"help": "Few-shot examples (default: per task)."})
    batch_size: int = field(default=16, metadata={"help": "Rows (a context with its choices) per forward."})
    limit: int | None = field(
        default=None, metadata={"help": "Evaluate only the first N items of each task."}
    )
    prefix: str | None = field(default=None, metadata={"help": "Conditioning prefix before every prompt."})
    output_dir: str = field(default="eval_results", metadata={"help": "Where results.json / results.md go."})


def main(args: ScriptArguments) -> dict:
    from accelerate import PartialState

    from hf_select.eval import evaluate, markdown_table
    from hf_select.loading import load_causal_lm, load_tokenizer

    state = PartialState()  # the process group of accelerate launch / torchrun (one process without them)
    model = load_causal_lm(args.model_name_or_path, dtype=args.dtype, device=state.device)
    tokenizer = load_tokenizer(args.model_name_or_path)
    output = evaluate(
        model, tokenizer, args.tasks, num_fewshot=args.num_fewshot, batch_size=args.batch_size,
        limit=args.limit, prefix=args.prefix, output_dir=args.output_dir, model_name=args.model_name_or_path,
        show_progress=state.is_main_process,
    )  # fmt: skip
    if state.is_main_process:
        print(markdown_table(output))
    return output


if __name__ == "__main__":
    (script_args,) = HfArgumentParser(ScriptArguments).parse_args_into_dataclasses()
    main(script_args)
