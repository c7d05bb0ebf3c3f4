"""``hf-select detect-heads``: find the retrieval heads of a causal LM (AttentionInfluence, arXiv 2505.07293)."""

from __future__ import annotations

from ..attention_influence.jobs import DetectHeadsArguments, detect_heads_job
from ..loading import ModelArguments

CONFIG_CLASSES = (ModelArguments, DetectHeadsArguments)


def run(model_args: ModelArguments, args: DetectHeadsArguments) -> int:
    detect_heads_job(model_args, args)
    return 0
