"""hf-select evaluation harness (``hf_select.eval``): task files, the data-parallel harness, the lm-eval bridge.

See ``eval/TASK_FORMAT.md`` for the task format.
"""

from .harness import (
    comparison_markdown,
    comparison_table,
    evaluate,
    markdown_table,
    multiple_choice_metrics,
    write_results,
)
from .lm_eval_adapter import (
    agreement_check,
    format_agreement,
    lm_eval_available,
    run_lm_eval,
    write_lm_eval_task,
)
from .tasks import TASK_TYPES, Task, TaskError, load_task, load_tasks

__all__ = [
    "TASK_TYPES",
    "Task",
    "TaskError",
    "agreement_check",
    "comparison_markdown",
    "comparison_table",
    "evaluate",
    "format_agreement",
    "lm_eval_available",
    "load_task",
    "load_tasks",
    "markdown_table",
    "multiple_choice_metrics",
    "run_lm_eval",
    "write_lm_eval_task",
    "write_results",
]
