"""``hf-select eval``: evaluate a model id or folder on harness tasks (data-parallel under accelerate/torchrun).

Example::

    hf-select eval --model_name_or_path out/students/slm --tasks world/eval_tasks --num_fewshot 0 \\
        --output_dir out/eval/slm
    accelerate launch -m hf_select.cli eval --model_name_or_path ... --tasks ...   # data-parallel
"""

from __future__ import annotations

from ..eval.jobs import EvalArguments, evaluate_job
from ..loading import ModelArguments

CONFIG_CLASSES = (ModelArguments, EvalArguments)


def run(model_args: ModelArguments, args: EvalArguments) -> int:
    report, agreed = evaluate_job(model_args, args)
    if report is not None:
        print(report)
    return 0 if agreed else 1
