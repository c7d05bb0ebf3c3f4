"""The ``TrainingArguments`` base of every hf-select trainer config (SLM, MeCo, OPUS, fine-tuning).

``Trainer`` pickles its ``TrainingArguments`` into ``training_args.bin`` in every checkpoint and writes them to
the logs, so a ``--hub_token`` given on a command line would be stored in plain text. This base moves the token
to the ``HF_TOKEN`` environment variable of this process (where huggingface_hub reads it for
``push_to_hub``) and clears the field once ``TrainingArguments`` is set up, before anything can save it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from transformers import TrainingArguments

from .validation import validate_config

__all__ = ["HfSelectTrainingArguments", "move_hub_token_to_environment"]


def move_hub_token_to_environment(args) -> None:
    """Move ``args.hub_token`` (if set) to ``os.environ["HF_TOKEN"]`` and clear it; never logged."""
    token = getattr(args, "hub_token", None)
    if token:
        os.environ["HF_TOKEN"] = token
        args.hub_token = None


@dataclass
class HfSelectTrainingArguments(TrainingArguments):
    """``TrainingArguments`` that never store a Hub token (see the module docstring), with the value rules of
    :mod:`hf_select.validation` (a finite learning rate > 0, ...) checked on the values as given."""

    def __post_init__(self):
        validate_config(self)
        super().__post_init__()
        move_hub_token_to_environment(self)
