"""Keep a Hub token given on the command line out of every saved file.

``Trainer`` pickles its ``TrainingArguments`` into ``training_args.bin`` in every checkpoint, so a
``--hub_token`` given to a train command used to be stored there in plain text. The configs of hf-select's
trainers move the token to the ``HF_TOKEN`` environment variable of this process (where huggingface_hub reads
it for ``push_to_hub``) and clear the field before anything can save it.
"""

from __future__ import annotations

import os


def move_hub_token_to_environment(args) -> None:
    """Move ``args.hub_token`` (if set) to ``os.environ["HF_TOKEN"]`` and clear it; never logged."""
    token = getattr(args, "hub_token", None)
    if token:
        os.environ["HF_TOKEN"] = token
        args.hub_token = None
