"""``hf-select train opus``: train a causal LM with OPUS dynamic batch selection (arXiv 2602.05400)."""

from __future__ import annotations

from ..loading import ModelArguments
from ..trainer_ext.jobs import OPUSDataArguments, train_opus
from ..trainer_ext.opus_config import OPUSConfig

CONFIG_CLASSES = (ModelArguments, OPUSDataArguments, OPUSConfig)


def run(model_args: ModelArguments, data: OPUSDataArguments, config: OPUSConfig) -> int:
    train_opus(model_args, data, config)
    return 0
