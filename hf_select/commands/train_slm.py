"""``hf-select train slm``: train a causal LM with RHO-1 Selective Language Modeling (arXiv 2404.07965)."""

from __future__ import annotations

from ..loading import ModelArguments
from ..trainer_ext.jobs import SLMDataArguments, train_slm
from ..trainer_ext.slm_config import SLMConfig

CONFIG_CLASSES = (ModelArguments, SLMDataArguments, SLMConfig)


def run(model_args: ModelArguments, data_args: SLMDataArguments, args: SLMConfig) -> int:
    train_slm(model_args, data_args, args)
    return 0
