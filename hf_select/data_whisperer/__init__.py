"""Data Whisperer (Wang et al., 2025): training-free selection of fine-tuning examples from in-context-learning
answers weighted by attention, and fine-tuning of the selected subset (full or LoRA).

* :mod:`.scorer` -- prompts, answer parsing and the ``Dataset.map`` scorer;
* :mod:`.finetune` -- fine-tuning a subset and comparing subsets (the function ``finetune`` is not exported
  here, so that ``hf_select.data_whisperer.finetune`` stays the module).
"""

from .finetune import FinetuneArguments, compare_subsets
from .scorer import DataWhisperer, DataWhispererConfig, answer_metric, parse_answers

__all__ = [
    "DataWhisperer",
    "DataWhispererConfig",
    "FinetuneArguments",
    "answer_metric",
    "compare_subsets",
    "parse_answers",
]
