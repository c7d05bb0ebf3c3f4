"""The output head of any transformers causal LM applied by hand, and the masks of packed rows.

hf-select projects only the predicted positions' final hidden states through the LM head
(:mod:`hf_select.token_loss`), so it applies the head itself: ``lm_head`` with the family's logit multiplier
(Cohere ``logit_scale``, Granite ``logits_scaling``, Falcon-H1 ``lm_head_multiplier``), then Gemma's
``final_logit_softcapping``. :func:`packed_attention_masks` builds explicit block-diagonal masks for the
families whose forward loses document boundaries. :mod:`hf_select.conformance` checks both against the model's
own forward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .model_adapter import UnsupportedModelError, unwrap_model

# model_type -> (config attribute, operation) of the scaling the family applies to the LM head's output.
# The attribute name alone is ambiguous (Granite divides by ``logits_scaling``, HyperCLOVA X multiplies).
_GRANITES = ("granite", "granite_swa", "granitemoe", "granitemoe_swa", "granitemoehybrid", "granitemoeshared")
_LOGIT_SCALING: dict[str, tuple[str, str]] = {
    **{t: ("logit_scale", "mul") for t in ("cohere", "cohere2", "cohere2_moe")},
    **{t: ("logits_scaling", "div") for t in _GRANITES},
    "hyperclovax": ("logits_scaling", "mul"),
    "falcon_h1": ("lm_head_multiplier", "mul"),
}


def logit_multiplier(config) -> float | None:
    """The factor a family multiplies its LM-head output by (Cohere ``logit_scale``, Granite
    ``1 / logits_scaling``, Falcon-H1 ``lm_head_multiplier``), or None when it applies none."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    rule = _LOGIT_SCALING.get(getattr(text, "model_type", None)) or _LOGIT_SCALING.get(
        getattr(config, "model_type", None)
    )
    if rule is None:
        return None
    value = getattr(text, rule[0], None)
    if value is None:
        value = getattr(config, rule[0], None)
    if value is None or float(value) == 1.0:
        return None
    return 1.0 / float(value) if rule[1] == "div" else float(value)


class LogitHead(nn.Module):
    """A causal LM's output head as its forward applies it: ``lm_head``, then the family's logit multiplier.

    The matmul runs in float32 whatever the model's dtype when the head is a plain ``nn.Linear`` (a bf16 head
    is off by up to ~2e-3 nats per token); other heads (e.g. a peft-wrapped ``lm_head``) run as they are and
    their output is cast. Returns float32 logits. The final soft-cap stays separate (:func:`softcap_logits`).
    """

    def __init__(self, head: nn.Module, multiplier: float | None = None):
        super().__init__()
        self.head = head
        self.multiplier = multiplier

    @property
    def weight(self) -> torch.Tensor:
        return self.head.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.head
        # accelerate-offloaded heads (``_hf_hook``) load their weight in a pre-forward hook: call them
        if type(head) is nn.Linear and not hasattr(head, "_hf_hook") and head.weight.device.type != "meta":
            bias = head.bias.float() if head.bias is not None else None
            logits = F.linear(hidden.float(), head.weight.float(), bias)
        else:
            logits = head(hidden).float()
        if self.multiplier is not None:
            logits = logits * self.multiplier
        return logits


def softcap_logits(logits: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """``tanh(logits / softcap) * softcap`` (Gemma 2/3 ``final_logit_softcapping``); identity for None."""
    return logits if softcap is None else torch.tanh(logits / softcap) * softcap


def decoder_of(inner: nn.Module) -> nn.Module | None:
    backbone = getattr(inner, "base_model", None)
    if backbone is not None and backbone is not inner:
        return backbone
    # Llama4ForCausalLM names ``language_model`` as its base-model prefix but stores the decoder as ``model``
    for decoder in (
        inner.get_decoder() if hasattr(inner, "get_decoder") else None,
        getattr(inner, "model", None),
    ):
        if isinstance(decoder, nn.Module) and decoder is not inner:
            return decoder
    return None


def split_unchecked(model: nn.Module) -> tuple[nn.Module, LogitHead, float | None]:
    inner = unwrap_model(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    backbone = decoder_of(inner)
    if head is None or backbone is None:
        model_type = getattr(getattr(inner, "config", None), "model_type", None)
        raise UnsupportedModelError(
            f"{type(inner).__name__} (model_type={model_type!r}) is not a causal LM with a decoder and an "
            "output embedding (lm_head)"
        )
    config = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
    softcap = getattr(config, "final_logit_softcapping", None)
    return backbone, LogitHead(head, logit_multiplier(inner.config)), softcap


def packed_attention_masks(model: nn.Module, position_ids: torch.Tensor) -> dict[str, Any]:
    """Explicit block-diagonal (per layer type also sliding-window or chunked) causal masks for packed rows.

    Built with transformers' own mask functions from ``position_ids`` (a restart opens a new document), in the
    format of the model's attention implementation, keyed by layer type (``full_attention``,
    ``sliding_attention``, ``chunked_attention``) as the models' forwards accept them.
    """
    from transformers.masking_utils import (
        create_causal_mask,
        create_chunked_causal_mask,
        create_sliding_window_causal_mask,
    )

    backbone, _, _ = split_unchecked(model)
    config = backbone.config
    first = next(backbone.parameters())
    embeds = torch.empty(*position_ids.shape, 0, dtype=first.dtype, device=position_ids.device)
    kwargs = {
        "config": config,
        "inputs_embeds": embeds,
        "attention_mask": None,
        "cache": None,
        "position_ids": position_ids,
        "allow_is_causal_skip": False,
    }
    creators = {
        "full_attention": create_causal_mask,
        "sliding_attention": create_sliding_window_causal_mask,
        "chunked_attention": create_chunked_causal_mask,
    }
    layer_types = set(getattr(config, "layer_types", None) or ()) | {"full_attention"}
    if getattr(config, "sliding_window", None):
        layer_types.add("sliding_attention")
    return {name: creators[name](**kwargs) for name in sorted(layer_types) if name in creators}
