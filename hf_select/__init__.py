"""hf-select: data selection for language-model training on the Hugging Face stack.

Public names are imported lazily (``import hf_select`` stays fast and does not import torch).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "ModelAdapter": "hf_select.model_adapter",
    "UnsupportedModelError": "hf_select.model_adapter",
    "get_model_adapter": "hf_select.model_adapter",
    "TokenLosses": "hf_select.token_loss",
    "per_token_loss": "hf_select.token_loss",
    "document_losses": "hf_select.token_loss",
    "pack_documents": "hf_select.packing",
    "PackedCollator": "hf_select.packing",
    "proxy_task_accuracy": "hf_select.proxy_accuracy",
    "ModelArguments": "hf_select.loading",
    "load_model_and_tokenizer": "hf_select.loading",
    "load_any_dataset": "hf_select.loading",
    "build_proxy_pool": "hf_select.proxy_pool",
    "benchmark_proxy_texts": "hf_select.proxy_pool",
    "FactoredCountSketch": "hf_select.opus_sketch",
    "select_candidates": "hf_select.opus_utility",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hf_select' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
