"""``hf-select train meco``: pretraining with metadata conditioning then cooldown (arXiv 2501.01956).

Example::

    hf-select train meco --model_name_or_path my-config-or-model --from_scratch \\
        --dataset_name_or_path corpus.jsonl --metadata_column url --max_steps 40000 \\
        --output_dir meco-run --save_steps 1000

Resuming (``--resume_from_checkpoint meco-run/checkpoint-37000``) continues the same run, before or after the
switch to the cooldown.
"""

from __future__ import annotations

from ..loading import ModelArguments
from ..trainer_ext.jobs import MeCoDataArguments, train_meco
from ..trainer_ext.meco_config import MeCoConfig

CONFIG_CLASSES = (ModelArguments, MeCoDataArguments, MeCoConfig)


def run(model_args: ModelArguments, data_args: MeCoDataArguments, config: MeCoConfig) -> int:
    train_meco(model_args, data_args, config)
    return 0
