"""``hf-select finetune``: fine-tune on the top fraction of a scored dataset (full or LoRA), optionally comparing
with a random subset of the same size and the full set on a held-out split (metric + gold loss, STR)."""

from __future__ import annotations

from ..data_whisperer.finetune import FinetuneArguments
from ..data_whisperer.jobs import FinetuneDataArguments, finetune_job
from ..loading import ModelArguments

CONFIG_CLASSES = (ModelArguments, FinetuneDataArguments, FinetuneArguments)


def run(model_args: ModelArguments, data: FinetuneDataArguments, args: FinetuneArguments) -> int:
    print(finetune_job(model_args, data, args))
    return 0
