"""One place that knows how each decoder-only family lays out its attention heads.

Methods that work per head (AttentionInfluence masks heads, Data Whisperer and retrieval-head detection read
attention rows) need, for every layer: the attention module, the module whose *input* is the concatenation
of the per-head outputs (``o_proj`` / ``c_proj`` / ``dense``), and where the value vectors come from. This
module answers those questions for the supported families and refuses anything else with a clear error.

Head layout convention (all supported families): the output projection's input is ``[..., num_heads *
head_dim]`` with head ``h`` at ``[h * head_dim, (h + 1) * head_dim)``; query head ``h`` reads KV head
``h // (num_heads // num_kv_heads)`` (grouped-query attention).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import InputIndexError

# model_type -> (path to the decoder-layer list from the base model, attention attribute, output projection,
# value source). The value source is either the name of a separate value projection or a fused QKV module
# with its split rule.
_LLAMA_LAYOUT = ("layers", "self_attn", "o_proj", ("v_proj", "separate"))
_FAMILIES: dict[str, tuple[str, str, str, tuple[str, str]]] = {
    "llama": _LLAMA_LAYOUT,
    "mistral": _LLAMA_LAYOUT,
    "qwen2": _LLAMA_LAYOUT,
    "qwen3": _LLAMA_LAYOUT,
    "gemma": _LLAMA_LAYOUT,
    "gemma2": _LLAMA_LAYOUT,
    "gemma3_text": _LLAMA_LAYOUT,
    "olmo": _LLAMA_LAYOUT,
    "olmo2": _LLAMA_LAYOUT,
    "olmo3": _LLAMA_LAYOUT,
    "phi3": ("layers", "self_attn", "o_proj", ("qkv_proj", "fused_qkv_blocks")),
    "gpt2": ("h", "attn", "c_proj", ("c_attn", "fused_qkv_equal")),
    "gpt_neox": ("layers", "attention", "dense", ("query_key_value", "fused_qkv_per_head")),
}

SUPPORTED_FAMILIES = tuple(sorted(_FAMILIES)) + ("any model with the Llama attention layout",)

# Families whose layers look like the Llama layout but whose per-head outputs are not "attention weights times
# the value projection's output" over a plain causal (or sliding-window) mask: refused with the reason.
_REFUSED: dict[str, str] = {
    "llama4_text": (
        "its chunked-attention layers (attention_chunk_size) restrict each query to its chunk and its NoPE "
        "layers scale queries by position; causal-uniform masking and attention capture would average across "
        "chunk boundaries"
    ),
    "gemma3n_text": (
        "its value vectors are RMS-normed after v_proj (v_norm) and its last layers reuse the keys and values "
        "of earlier layers (KV sharing); the value projection's output is not what the heads average"
    ),
}
_REFUSED["llama4"] = _REFUSED["llama4_text"]
_REFUSED["gemma3n"] = _REFUSED["gemma3n_text"]


class UnsupportedModelError(ValueError):
    """Raised for a model whose attention layout hf-select does not know."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the transformers ``PreTrainedModel`` inside a peft / accelerate / DDP / DataParallel / FSDP /
    DeepSpeed / ``torch.compile`` wrapper (the one unwrapping rule of hf-select)."""
    while True:
        if hasattr(model, "get_base_model") and callable(model.get_base_model):  # peft.PeftModel
            inner = model.get_base_model()
        elif hasattr(model, "_orig_mod"):  # torch.compile
            inner = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module) and not hasattr(model, "get_input_embeddings"):
            inner = model.module  # DDP, DataParallel, FSDP, DeepSpeed engines: a wrapper, not a model
        else:
            return model
        if inner is model:
            return model
        model = inner


@dataclass
class ModelAdapter:
    """Attention layout of one decoder-only causal LM.

    Build it with :func:`get_model_adapter`. All per-layer lists are indexed by decoder layer.
    ``sliding_windows[layer]`` is the layer's sliding window ``w`` (query ``i`` sees keys ``i - w < j <= i``,
    transformers' convention) or None for full causal attention. The head and packing checks of a model are
    :func:`hf_select.conformance.probe_model`.
    """

    model: nn.Module
    family: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    layers: list[nn.Module]
    attention_modules: list[nn.Module]
    output_projections: list[nn.Module]
    value_projections: list[nn.Module]
    value_split: str
    sliding_windows: list[int | None] = field(default_factory=list)

    @property
    def heads_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    def kv_head_of(self, head: int) -> int:
        """KV head read by query head ``head`` (grouped-query attention)."""
        return head // self.heads_per_kv

    def head_slice(self, head: int) -> slice:
        """Slice of head ``head`` in the output projection's input features."""
        return slice(head * self.head_dim, (head + 1) * self.head_dim)

    def values_from_projection(self, projection_output: torch.Tensor) -> torch.Tensor:
        """Value vectors ``[batch, seq, num_kv_heads, head_dim]`` from the value-source module's output."""
        *lead, _ = projection_output.shape
        d, h, kv = self.head_dim, self.num_heads, self.num_kv_heads
        if self.value_split == "separate":
            values = projection_output
        elif self.value_split == "fused_qkv_blocks":  # [q (h*d) | k (kv*d) | v (kv*d)]
            values = projection_output[..., (h + kv) * d :]
        elif self.value_split == "fused_qkv_equal":  # GPT-2: [q | k | v], each h*d
            values = projection_output[..., 2 * h * d :]
        elif self.value_split == "fused_qkv_per_head":  # GPT-NeoX: per head [q_h | k_h | v_h]
            values = projection_output.view(*lead, h, 3 * d)[..., 2 * d :]
        else:  # pragma: no cover - guarded by the family table
            raise AssertionError(self.value_split)
        return values.reshape(*lead, kv, d)

    def check_head(self, layer: int, head: int) -> None:
        """Raise a clear error for an out-of-range (layer, head) pair."""
        if not 0 <= layer < self.num_layers:
            raise InputIndexError(
                f"layer {layer} out of range: {type(self.model).__name__} has {self.num_layers} layers"
            )
        if not 0 <= head < self.num_heads:
            raise InputIndexError(
                f"head {head} out of range: {type(self.model).__name__} has {self.num_heads} query heads"
            )

    def hook_output_projection_input(
        self, layer: int, fn: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.utils.hooks.RemovableHandle:
        """Register ``fn(head_concat) -> head_concat`` on the input of ``layer``'s output projection."""

        def pre_hook(_module, args):
            return (fn(args[0]), *args[1:])

        return self.output_projections[layer].register_forward_pre_hook(pre_hook)


def _config_value(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def _has_llama_layout(attn: nn.Module) -> bool:
    return all(hasattr(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj"))


def get_model_adapter(model: nn.Module) -> ModelAdapter:
    """Describe the attention layout of ``model`` (a transformers causal LM, possibly peft-wrapped).

    Raises:
        UnsupportedModelError: naming the model class and the supported families when the layout is unknown
            (encoder-decoder, state-space or hybrid models, or an attention layout not listed).
    """
    model = unwrap_model(model)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    name = type(model).__name__
    if config is None or getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{name} is not a decoder-only transformers model; supported: {SUPPORTED_FAMILIES}"
        )
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    refused = _REFUSED.get(model_type) or _REFUSED.get(getattr(text_config, "model_type", None))
    if refused:
        raise UnsupportedModelError(f"{model_type} ({name}) is not supported for per-head methods: {refused}")
    backbone = getattr(model, "base_model", model)
    layout = _FAMILIES.get(model_type)
    if layout is None:
        layers = getattr(backbone, "layers", None)
        if (
            layers is None
            or not len(layers)
            or not _has_llama_layout(getattr(layers[0], "self_attn", nn.Module()))
        ):
            raise UnsupportedModelError(
                f"{name} (model_type={model_type!r}) has no attention layout hf-select knows. "
                f"Supported families: {', '.join(SUPPORTED_FAMILIES)}."
            )
        layout = _LLAMA_LAYOUT
    layers_attr, attn_attr, out_attr, (value_attr, value_split) = layout
    layers = list(getattr(backbone, layers_attr))
    missing = [
        i for i, layer in enumerate(layers) if not isinstance(getattr(layer, attn_attr, None), nn.Module)
    ]
    if missing:
        types = getattr(text_config, "layer_types", None)
        raise UnsupportedModelError(
            f"{model_type}: decoder layers {missing} have no attention module"
            + (f" (layer types {[types[i] for i in missing]})" if types else "")
            + "; per-head methods need softmax attention in every layer (hybrid linear-attention / "
            "state-space models are not supported)"
        )
    attentions = [getattr(layer, attn_attr) for layer in layers]
    num_heads = _config_value(text_config, "num_attention_heads", "n_head")
    num_kv_heads = _config_value(text_config, "num_key_value_heads", default=num_heads)
    hidden = _config_value(text_config, "hidden_size", "n_embd")
    head_dim = _config_value(text_config, "head_dim", default=hidden // num_heads)
    if model_type in ("gpt2", "gpt_neox"):  # no grouped-query attention; head_dim is never a config field
        num_kv_heads, head_dim = num_heads, hidden // num_heads
    return ModelAdapter(
        model=model,
        family=model_type if model_type in _FAMILIES else f"{model_type} (Llama layout)",
        num_layers=len(layers),
        num_heads=int(num_heads),
        num_kv_heads=int(num_kv_heads),
        head_dim=int(head_dim),
        layers=layers,
        attention_modules=attentions,
        output_projections=[getattr(attn, out_attr) for attn in attentions],
        value_projections=[getattr(attn, value_attr) for attn in attentions],
        value_split=value_split,
        sliding_windows=[_sliding_window(attn, text_config) for attn in attentions],
    )


def _sliding_window(attention: nn.Module, config) -> int | None:
    """The layer's sliding window: the config's window on layers whose attention says ``is_sliding`` (EXAONE-4,
    Gemma 3), the attention module's own ``sliding_window`` where it keeps one (Gemma 2, Qwen2, gpt-oss,
    Cohere2: None on full layers), else the config's (Mistral, Mixtral, Phi-3: every layer)."""
    if isinstance(
        getattr(attention, "is_sliding", None), bool
    ):  # EXAONE-4 keeps the window on full layers too
        window = getattr(config, "sliding_window", None) if attention.is_sliding else None
    elif hasattr(attention, "sliding_window"):
        window = attention.sliding_window
    else:
        window = getattr(config, "sliding_window", None)
    return int(window) if window else None
