"""Trainer subclasses of hf-select (imported as ``hf_select.trainer_ext``), loaded lazily."""

from __future__ import annotations

import importlib

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "SLMConfig": "hf_select.trainer_ext.slm_config",
    "SLMTrainer": "hf_select.trainer_ext.slm_trainer",
    "SLMCollator": "hf_select.trainer_ext.slm_trainer",
    "MeCoConfig": "hf_select.trainer_ext.meco_config",
    "MeCoTrainer": "hf_select.trainer_ext.meco_trainer",
    "OPUSConfig": "hf_select.trainer_ext.opus_config",
    "OPUSTrainer": "hf_select.trainer_ext.opus_trainer",
    "LabelledLossTrainer": "hf_select.trainer_ext.labelled_loss_trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hf_select.trainer_ext' has no attribute {name!r}")
