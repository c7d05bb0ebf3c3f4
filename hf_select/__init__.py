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
    "proxy_task_accuracy": "hf_select.attention_influence.proxy_accuracy",
    "ModelArguments": "hf_select.loading",
    "load_model_and_tokenizer": "hf_select.loading",
    "load_any_dataset": "hf_select.loading",
    "InputError": "hf_select.errors",
    "validate_config": "hf_select.validation",
    "normalize_url": "hf_select.meco.metadata",
    "metadata_prefix": "hf_select.meco.metadata",
    "tokenize_with_metadata": "hf_select.meco.metadata",
    "add_metadata_tokens": "hf_select.meco.metadata",
    "generate_with_prefix": "hf_select.meco.conditional",
    "prefixed_text_losses": "hf_select.meco.conditional",
    "url_prefix": "hf_select.meco.conditional",
    "push_scored_dataset": "hf_select.hub",
    "push_model": "hf_select.hub",
    "RetrievalHeads": "hf_select.attention_influence.retrieval_heads",
    "detect_retrieval_heads": "hf_select.attention_influence.retrieval_heads",
    "mask_heads": "hf_select.attention_influence.head_masking",
    "AttentionInfluence": "hf_select.attention_influence.scorer",
    "AttentionInfluenceConfig": "hf_select.attention_influence.scorer",
    "select_top_fraction": "hf_select.selection",
    "upweighted_mix": "hf_select.selection",
    "combine_by_rank": "hf_select.selection",
    "sharded_map": "hf_select.sharded_map",
    "load_sharded_output": "hf_select.sharded_map",
    "DataWhisperer": "hf_select.data_whisperer.scorer",
    "top_fraction_indices": "hf_select.selection",
    "FinetuneArguments": "hf_select.data_whisperer.finetune",
    "compare_subsets": "hf_select.data_whisperer.finetune",
    "metrics_path": "hf_select.eval.metric_modules",
    "train_bpe_tokenizer": "hf_select.bpe",
    "compute_reference_losses": "hf_select.slm.reference_losses",
    "project_token_losses": "hf_select.slm.cross_tokenizer",
    "cross_tokenizer_reference_losses": "hf_select.slm.cross_tokenizer",
    "token_loss_dynamics": "hf_select.slm.token_dynamics",
    "classify_token_dynamics": "hf_select.slm.token_dynamics",
    "build_proxy_pool": "hf_select.opus.proxy_pool",
    "benchmark_proxy_texts": "hf_select.opus.proxy_pool",
    "FactoredCountSketch": "hf_select.opus.sketch",
    "select_candidates": "hf_select.opus.utility",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hf_select' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
