"""One attention probe for every method that reads attention: the attention probabilities (or their argmax) of
chosen query rows at chosen layers, from the same forward pass that computes the model's outputs.

Used by retrieval-head detection (AttentionInfluence, arXiv 2505.07293 section 3.2: the argmax key of the rows
that predict answer tokens) and by Data Whisperer (arXiv 2505.12212: the attention of the query tokens to the
demonstrations at one middle layer).

How it works: the model's attention implementation is switched, for the duration of a ``with`` block, to a
function registered with ``transformers.AttentionInterface``. That function receives every layer's post-RoPE
queries and keys, runs the model's own kernel (``sdpa``, ``eager`` or ``flash_attention_*``) unchanged -- so the
outputs are exactly those of the unprobed model -- and, at the probed layers only, recomputes the attention
logits of the chosen query rows in float32:

- grouped-query attention: query head ``h`` reads KV head ``h // (num_heads // num_kv_heads)`` (the query
  heads are grouped, the keys are never repeated);
- scaling: the ``scaling`` the layer passes (Gemma's ``query_pre_attn_scalar``, Granite's multiplier...), else
  ``head_dim ** -0.5`` as ``sdpa`` does;
- soft-capping: ``softcap * tanh(logits / softcap)`` when the layer passes ``softcap`` (Gemma 2);
- masks: the 4D mask the model built for that layer (it already holds causality, padding, packed documents
  and the layer's sliding window) is applied as the kernel applies it; when the model passes no 4D mask
  (``sdpa``'s ``is_causal`` fast path, flash attention) the causal mask, the layer's ``sliding_window`` and a 2D
  padding mask are built here;
- attention sinks (``s_aux``, gpt-oss) join the softmax denominator as the kernel does.

Registration: one name per underlying kernel (``hf_select_probe_<kernel>``), added to the attention and mask
registries when the first probe opens and removed when the last one closes. The registered function holds no
reference to any model (the active probe is attached to the model's attention modules and detached on exit),
so a probe never keeps a model alive and the registries do not grow across calls.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import InputIndexError
from .model_adapter import ModelAdapter, get_model_adapter, unwrap_model

__all__ = ["AttentionProbe", "StopForward", "attention_probe", "probe_attention_rows"]

_PREFIX = "hf_select_probe_"
_ATTR = "_hf_select_attention_probe"
_LOCK = threading.Lock()
_REFCOUNT: dict[str, int] = {}
_SUPPORTED = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flash_attention_4")


class StopForward(Exception):
    """Raised after the last probed layer when ``stop_after_last`` is set; :func:`attention_probe` swallows it."""


@dataclass
class AttentionProbe:
    """What to record and what was recorded.

    Attributes:
        adapter: the model's :class:`~hf_select.model_adapter.ModelAdapter`.
        layers: the probed layer indices (``None``: every layer).
        rows: the query rows, as positions in the current forward pass's queries: a 1D tensor shared by every
            batch row, a list of 1D tensors (one per batch row), or ``None`` for the last row only.
        mode: ``"probs"`` (softmax probabilities ``[batch, heads, rows, keys]``, float32) or ``"argmax"`` (key
            positions ``[batch, heads, rows]``). With per-batch-row ``rows`` every result is a list of
            ``[heads, rows_b, keys]`` (or ``[heads, rows_b]``) tensors instead.
        prefill_only: record only forward passes that process more than one query token (the prompt forward of
            ``generate``; decoding steps are not recorded).
        stop_after_last: abandon the forward pass (:class:`StopForward`) once the last probed layer ran.
        results: ``{layer: tensor}`` of the latest recorded forward pass.
    """

    adapter: ModelAdapter
    layers: frozenset[int] | None = None
    rows: torch.Tensor | list[torch.Tensor] | None = None
    mode: str = "probs"
    prefill_only: bool = False
    stop_after_last: bool = False
    results: dict[int, torch.Tensor | list[torch.Tensor]] = field(default_factory=dict)

    @property
    def argmax(self) -> dict[int, torch.Tensor | list[torch.Tensor]]:
        """The results (the name retrieval-head detection reads)."""
        return self.results

    @argmax.setter
    def argmax(self, value: dict) -> None:
        self.results = value

    def _record(self, layer: int, query, key, attention_mask, kwargs) -> None:
        if self.prefill_only and query.shape[2] == 1:
            return
        rows = self.rows
        if isinstance(rows, (list, tuple)):
            if len(rows) != query.shape[0]:
                raise ValueError(
                    f"probe rows name {len(rows)} batch rows, the forward pass has {query.shape[0]}"
                )
            self.results[layer] = [
                _row_attention(
                    query[b : b + 1], key[b : b + 1], _batch_slice(attention_mask, b), r, self.mode, kwargs
                )[0]
                for b, r in enumerate(rows)
            ]
        else:
            if rows is None:
                rows = torch.tensor([query.shape[2] - 1], device=query.device)
            self.results[layer] = _row_attention(query, key, attention_mask, rows, self.mode, kwargs)
        if self.stop_after_last and self.layers is not None and layer == max(self.layers):
            raise StopForward


def _batch_slice(mask, b: int):
    if isinstance(mask, torch.Tensor) and mask.shape[0] > 1:
        return mask[b : b + 1]
    return mask


def _row_attention(query, key, attention_mask, rows, mode: str, kwargs) -> torch.Tensor:
    """Attention of query ``rows`` (float32, GQA-aware): probabilities ``[B, H, R, K]`` or argmax ``[B, H, R]``."""
    rows = torch.as_tensor(rows, dtype=torch.long, device=query.device)
    batch, heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} KV heads")
    scaling = kwargs.get("scaling")
    scaling = dim**-0.5 if scaling is None else float(scaling)
    grouped = query[:, :, rows].float().reshape(batch, kv_heads, heads // kv_heads, len(rows), dim)
    logits = torch.einsum("bvgrd,bvkd->bvgrk", grouped, key.float()).reshape(batch, heads, len(rows), k_len)
    logits = logits * scaling
    softcap = kwargs.get("softcap")
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 4:
        mask = attention_mask[:, :, rows, :k_len]
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, -math.inf)
        else:
            logits = logits + mask.float()
    elif attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
        raise ValueError(
            f"the attention probe cannot read a {type(attention_mask).__name__} mask (flex attention); "
            "load the model with attn_implementation='sdpa' or 'eager'"
        )
    else:  # no 4D mask: causal (+ sliding window, + 2D padding) as the kernel applies it
        absolute = rows + (k_len - q_len)  # query position in key coordinates (KV cache)
        keys = torch.arange(k_len, device=query.device)
        allowed = keys[None, :] <= absolute[:, None]
        window = kwargs.get("sliding_window")
        if window:
            allowed &= absolute[:, None] - keys[None, :] < window
        allowed = allowed[None, None]
        if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
            allowed = allowed & attention_mask[:, None, None, -k_len:].bool()
        logits = logits.masked_fill(~allowed, -math.inf)
    if mode == "argmax":
        return logits.argmax(-1)
    sinks = kwargs.get("s_aux")
    if sinks is not None:  # gpt-oss: a learned sink logit per head joins the softmax denominator
        sink = sinks.float().reshape(1, heads, 1, 1).expand(batch, heads, len(rows), 1)
        return torch.cat([logits, sink], dim=-1).softmax(-1)[..., :-1]
    return logits.softmax(-1)


def _kernel(implementation: str, module):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if implementation == "eager":  # every modelling file defines its own eager_attention_forward
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            raise ValueError(f"{type(module).__name__} has no eager_attention_forward; use sdpa")
        return fn
    return ALL_ATTENTION_FUNCTIONS[implementation]


def _make_probe_function(implementation: str):
    def probed_attention(module, query, key, value, attention_mask, *args, **kwargs):
        output = _kernel(implementation, module)(module, query, key, value, attention_mask, *args, **kwargs)
        state = getattr(module, _ATTR, None)
        if state is not None:
            probe, layer = state
            if probe.layers is None or layer in probe.layers:
                probe._record(layer, query, key, attention_mask, kwargs)
        return output

    probed_attention.__name__ = f"{_PREFIX}{implementation}"
    return probed_attention


def _acquire(implementation: str) -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    name = f"{_PREFIX}{implementation}"
    with _LOCK:
        if _REFCOUNT.get(name, 0) == 0:
            AttentionInterface.register(name, _make_probe_function(implementation))
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[implementation])
        _REFCOUNT[name] = _REFCOUNT.get(name, 0) + 1
    return name


def _release(name: str) -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    with _LOCK:
        _REFCOUNT[name] -= 1
        if _REFCOUNT[name] == 0:
            del _REFCOUNT[name]
            AttentionInterface._global_mapping.pop(name, None)
            AttentionMaskInterface._global_mapping.pop(name, None)


@contextlib.contextmanager
def attention_probe(
    model: nn.Module,
    layers: Sequence[int] | None = None,
    rows: torch.Tensor | Sequence[torch.Tensor] | None = None,
    mode: str = "probs",
    prefill_only: bool = False,
    stop_after_last: bool = False,
) -> Iterator[AttentionProbe]:
    """Inside the block, every forward pass of ``model`` records, at ``layers``, the attention of ``rows``.

    Args:
        model: a causal LM of a family known to :func:`hf_select.get_model_adapter`, with ``sdpa``, ``eager`` or
            flash attention.
        layers: decoder layers to probe (``None``: all).
        rows: query rows (see :class:`AttentionProbe`; may be changed on the yielded probe between passes).
        mode: ``"probs"`` or ``"argmax"``.
        prefill_only: skip decoding steps (one query token).
        stop_after_last: end each forward pass right after the last probed layer (later layers and the LM head
            are skipped; the block then ends at that forward call, the exception is swallowed here).

    The model's attention implementation is restored on exit, and the probe's registry entries are removed.
    """
    if mode not in ("probs", "argmax"):
        raise ValueError(f"mode must be 'probs' or 'argmax', got {mode!r}")
    inner = unwrap_model(model)
    adapter = get_model_adapter(inner)
    if layers is not None:
        layers = frozenset(int(x) for x in layers)
        bad = [x for x in layers if not 0 <= x < adapter.num_layers]
        if bad or not layers:
            raise InputIndexError(
                f"probe layers {sorted(bad)} out of range: the model has {adapter.num_layers} layers"
            )
    elif stop_after_last:
        layers = frozenset(range(adapter.num_layers))
    original = inner.config._attn_implementation or "eager"
    if original.startswith(_PREFIX) or any(hasattr(m, _ATTR) for m in adapter.attention_modules):
        raise RuntimeError("an attention probe is already active on this model")
    if original not in _SUPPORTED:
        raise ValueError(
            f"the attention probe supports {', '.join(_SUPPORTED)} attention, not {original!r}; load the model "
            "with attn_implementation='sdpa' or 'eager'"
        )
    probe = AttentionProbe(
        adapter=adapter, layers=layers, rows=rows, mode=mode, prefill_only=prefill_only,
        stop_after_last=stop_after_last,
    )  # fmt: skip
    name = _acquire(original)
    try:
        for index, module in enumerate(adapter.attention_modules):
            setattr(module, _ATTR, (probe, index))
        inner.set_attn_implementation(name)
        try:
            yield probe
        except StopForward:
            pass
        finally:
            inner.set_attn_implementation(original)
    finally:
        for module in adapter.attention_modules:
            if hasattr(module, _ATTR):
                delattr(module, _ATTR)
        _release(name)


@torch.no_grad()
def probe_attention_rows(
    model: nn.Module, input_ids: torch.Tensor, layer: int, rows: Sequence[int] | torch.Tensor, **model_kwargs
) -> torch.Tensor:
    """Attention probabilities ``[batch, heads, len(rows), seq]`` of prompt positions ``rows`` at ``layer``.

    One forward pass without cache that stops right after ``layer``.
    """
    rows = torch.as_tensor(rows, dtype=torch.long, device=input_ids.device)
    with attention_probe(model, [layer], rows, stop_after_last=True) as probe:
        model(input_ids=input_ids, use_cache=False, **model_kwargs)
    if layer not in probe.results:
        raise RuntimeError(
            f"layer {layer} of {type(unwrap_model(model)).__name__} never called its attention"
        )
    return probe.results[layer]
