"""Causal-uniform head masking for AttentionInfluence (arXiv 2505.07293, appendix C).

The paper masks a retrieval head by "setting its attention weights to equal weights (1/L)". In a causal
full-sequence pass the sound reading is *causal uniform* attention: query ``i`` averages the value vectors of
the ``i + 1`` visible positions of its own document (padding excluded). It is NOT zero-ablation.

Implementation (independent of the attention kernel: eager, sdpa, flash): the attention output of a head
before the output projection is ``sum_j w_ij v_j``; with uniform weights it is the running mean of the value
vectors of its KV head. A forward hook on the value projection captures the values of the masked layers, and
a forward pre-hook on the output projection (whose input is the concatenation of the heads) overwrites the
masked heads' slices with that running mean. Values are never rotated by RoPE, so this is exact for every
family of :mod:`hf_select.model_adapter`, grouped-query attention and value biases included.

Document boundaries follow :mod:`hf_select.token_loss`: a row is packed when its ``position_ids`` restart;
the running mean restarts there. Padding (``attention_mask == 0``) contributes nothing. Sliding-window layers
average over their window only (uniform over the keys the layer can see), so masking is exact at any length.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from ..model_adapter import ModelAdapter, get_model_adapter, unwrap_model
from ..token_loss import split_causal_lm

Head = tuple[int, int]


def normalize_heads(heads: Iterable[Sequence[int]], adapter: ModelAdapter) -> list[Head]:
    """Sorted unique ``(layer, head)`` pairs, each checked against the model (clear error when out of range)."""
    out = set()
    for item in heads:
        if len(item) != 2:
            raise ValueError(f"a head is a (layer, head) pair, got {item!r}")
        layer, head = int(item[0]), int(item[1])
        adapter.check_head(layer, head)
        out.add((layer, head))
    return sorted(out)


def document_start_index(position_ids: torch.Tensor) -> torch.Tensor:
    """Index of the first position of the document each position belongs to ``[batch, seq]``."""
    seq = position_ids.shape[-1]
    index = torch.arange(seq, device=position_ids.device).expand_as(position_ids)
    restart = torch.ones_like(position_ids, dtype=torch.bool)
    restart[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    return torch.cummax(torch.where(restart, index, torch.zeros_like(index)), dim=-1).values


def causal_running_mean(
    values: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Causal uniform attention output: mean of the visible real value vectors of the same document.

    Args:
        values: ``[batch, seq, ...]`` value vectors.
        attention_mask: ``[batch, seq]`` 1 for real tokens (None: all real).
        position_ids: ``[batch, seq]``; a position that is not its predecessor + 1 starts a new document
            (None: one document per row).
        window: sliding window ``w`` of the layer (None: full causal). Query ``i`` then averages only the
            positions ``i - w < j <= i``, transformers' sliding-window rule (Mistral, Gemma 2/3, gpt-oss).

    Returns ``values``-shaped running means (accumulated in float32). Positions with nothing visible get 0.
    """
    batch, seq = values.shape[:2]
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1 or None, got {window}")
    flat = values.reshape(batch, seq, -1).float()
    real = (
        torch.ones(batch, seq, device=values.device)
        if attention_mask is None
        else attention_mask.to(values.device).float()
    )
    sums = torch.cumsum(flat * real[..., None], dim=1)
    counts = torch.cumsum(real, dim=1)
    index = torch.arange(seq, device=values.device).expand(batch, seq)
    first = torch.zeros_like(index)  # first visible position of every query
    if position_ids is not None:
        first = document_start_index(position_ids.to(values.device))
    if window is not None:
        first = torch.maximum(first, index - window + 1)
    prev = (first - 1).clamp(min=0)
    has_prev = (first > 0).float()
    sums = sums - torch.gather(sums, 1, prev[..., None].expand_as(sums)) * has_prev[..., None]
    counts = counts - torch.gather(counts, 1, prev) * has_prev
    mean = sums / counts.clamp(min=1)[..., None]
    return mean.to(values.dtype).reshape(values.shape)


class HeadMasker:
    """Installs and removes the hooks of :func:`mask_heads`; see the module docstring.

    The sequence layout (attention mask, position ids) is read from each backbone forward call; callers that
    run decoder layers themselves can set it with :meth:`set_sequence_info`.
    """

    def __init__(self, model: nn.Module, heads: Iterable[Sequence[int]]):
        self.adapter = get_model_adapter(model)
        self.heads = normalize_heads(heads, self.adapter)
        self.by_layer: dict[int, list[int]] = {}
        for layer, head in self.heads:
            self.by_layer.setdefault(layer, []).append(head)
        self.backbone = split_causal_lm(unwrap_model(model))[0]
        self._signature = inspect.signature(self.backbone.forward)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._values: dict[int, torch.Tensor] = {}
        self.attention_mask: torch.Tensor | None = None
        self.position_ids: torch.Tensor | None = None

    def set_sequence_info(self, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None):
        if isinstance(attention_mask, dict) and position_ids is not None:
            # explicit per-layer-type masks of packed rows (token_loss.packed_attention_masks): the documents
            # follow from the restarting positions, padding is a singleton segment
            attention_mask = None
        if attention_mask is not None and attention_mask.ndim != 2:
            raise ValueError(
                "mask_heads needs a 2D [batch, seq] attention_mask (or None with position_ids for packed rows); "
                f"got shape {tuple(attention_mask.shape)}"
            )
        self.attention_mask, self.position_ids = attention_mask, position_ids

    def _backbone_pre_hook(self, _module, args, kwargs):
        bound = self._signature.bind_partial(*args, **kwargs).arguments
        past = bound.get("past_key_values")
        if past is not None and hasattr(past, "get_seq_length") and past.get_seq_length() > 0:
            raise ValueError(
                "mask_heads needs full-sequence forward passes; incremental decoding with a KV cache "
                "would average only the new positions (pass use_cache=False / no past_key_values)"
            )
        self.set_sequence_info(bound.get("attention_mask"), bound.get("position_ids"))

    def _value_hook(self, layer: int):
        def hook(_module, _args, output):
            out = output[0] if isinstance(output, tuple) else output
            self._values[layer] = self.adapter.values_from_projection(out)

        return hook

    def _replace(self, layer: int):
        def fn(concat: torch.Tensor) -> torch.Tensor:
            values = self._values.pop(layer, None)
            if values is None:
                raise RuntimeError(f"mask_heads: no value vectors captured for layer {layer}")
            if values.shape[1] != concat.shape[1]:
                raise ValueError("mask_heads: value and attention-output lengths differ (KV cache in use?)")
            mask = self.attention_mask
            if mask is not None and mask.shape[-1] != values.shape[1]:
                raise ValueError(
                    f"mask_heads: attention_mask covers {mask.shape[-1]} positions but the layer sees "
                    f"{values.shape[1]} (KV cache in use?)"
                )
            kv_heads = sorted({self.adapter.kv_head_of(h) for h in self.by_layer[layer]})
            means = causal_running_mean(
                values[:, :, kv_heads], mask, self.position_ids, self.adapter.sliding_windows[layer]
            )
            concat = concat.clone()
            for head in self.by_layer[layer]:
                concat[..., self.adapter.head_slice(head)] = means[
                    :, :, kv_heads.index(self.adapter.kv_head_of(head))
                ]
            return concat

        return fn

    def install(self) -> HeadMasker:
        self._handles.append(
            self.backbone.register_forward_pre_hook(self._backbone_pre_hook, with_kwargs=True)
        )
        for layer in self.by_layer:
            self._handles.append(
                self.adapter.value_projections[layer].register_forward_hook(self._value_hook(layer))
            )
            self._handles.append(self.adapter.hook_output_projection_input(layer, self._replace(layer)))
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._values.clear()
        self.attention_mask = self.position_ids = None


@contextlib.contextmanager
def mask_heads(model: nn.Module, heads: Iterable[Sequence[int]]) -> Iterator[HeadMasker]:
    """Give the ``(layer, query head)`` pairs ``heads`` causal uniform attention inside the ``with`` block.

    AttentionInfluence (arXiv 2505.07293, appendix C) builds its weak reference model this way. Each masked
    head's output at position ``i`` becomes the mean of the value vectors (of its KV head) over the real
    positions ``<= i`` of the same packed document. The model is exactly as before on exit (hooks only).
    On sliding-window layers (Mistral, Gemma 2/3, gpt-oss, Cohere2) the mean covers only the window: the
    positions ``i - w < j <= i`` (``ModelAdapter.sliding_windows``), i.e. uniform weights over exactly the keys
    the layer's softmax attention may see. Needs full-sequence passes: an incremental KV-cache step raises an
    error.

    Example::

        with mask_heads(model, [(3, 1), (5, 0)]):
            losses = per_token_loss(model, input_ids, attention_mask)

    Raises:
        UnsupportedModelError: for a model whose attention layout is unknown.
        IndexError: for a layer or head index out of range.
    """
    masker = HeadMasker(model, heads).install()
    try:
        yield masker
    finally:
        masker.remove()
