"""``hf-select push``: publish a scored dataset (FineWeb-Edu layout) or a trained model to the Hub or a folder.

The Hub token comes from ``HF_TOKEN`` or the huggingface_hub login (never from the command line, where it
would show in the process list); it is never printed. ``--local_dir`` writes the same layout locally.

Examples::

    hf-select push --kind dataset --source out/scored --score_column ai_score --thresholds 5 8 \\
        --int_score_bins 10 --method attention_influence --model_id org/base --repo_id me/ai-scores
    hf-select push --kind model --source out/students/ai --selection '{"method": "attention_influence"}' \\
        --local_dir out/publish/model
"""

from __future__ import annotations

from ..publish import PushArguments, publish

CONFIG_CLASSES = (PushArguments,)


def run(args: PushArguments) -> int:
    print(f"published: {publish(args)}")
    return 0
