"""``hf-select select``: keep the top fraction of a scored dataset per domain (AttentionInfluence: top 20%),
optionally combined by rank with another score and written as the up-weighted training mix."""

from __future__ import annotations

from ..selection import SelectArguments, select_to_disk

CONFIG_CLASSES = (SelectArguments,)


def run(args: SelectArguments) -> int:
    select_to_disk(args)
    return 0
