"""Trainer subclasses of hf-select (imported as ``hf_select.trainer_ext``)."""

from .meco_config import MeCoConfig as MeCoConfig
from .meco_trainer import MeCoTrainer as MeCoTrainer
