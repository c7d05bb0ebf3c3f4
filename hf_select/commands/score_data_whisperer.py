"""``hf-select score data-whisperer``: add Data Whisperer scores to a question/answer dataset.

Writes the scored dataset (``save_to_disk``) and ``selection.json`` (top-fraction indices, selection wall-clock,
counters, fingerprint) to ``--output_dir``; ``hf-select finetune`` reads both. Every scoring parameter is a
field of :class:`hf_select.data_whisperer.DataWhispererConfig` (parsed here as options). Finished groups are
persisted under ``--output_dir/dw_state``, so a killed run resumes where it stopped. Scores served from the
``datasets`` cache are reported as cached, with no selection wall-clock (STR is never computed from a cache hit).
"""

from __future__ import annotations

from ..data_whisperer.config import DataWhispererConfig
from ..data_whisperer.jobs import DataWhispererArguments, score_to_disk
from ..loading import ModelArguments

CONFIG_CLASSES = (ModelArguments, DataWhispererArguments, DataWhispererConfig)


def run(model_args: ModelArguments, args: DataWhispererArguments, config: DataWhispererConfig) -> int:
    print(score_to_disk(model_args, args, config))
    return 0
