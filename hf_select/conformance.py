"""Conformance probe: checks once per model that hf-select's hand-applied pieces reproduce its own forward.

:func:`probe_model` runs two checks on a few random tokens (the LM head applied by hand, and packed rows
keeping their documents apart) and returns a :class:`ModelProbe`; :func:`hf_select.token_loss.split_causal_lm`
and :func:`hf_select.token_loss.prepare_model_inputs` act on it (a fix, or a clear error naming the family).
"""

from __future__ import annotations

import math
import weakref
from typing import NamedTuple

import torch
from torch import nn

from .logit_head import packed_attention_masks, softcap_logits, split_unchecked
from .model_adapter import unwrap_model


class ModelProbe(NamedTuple):
    """What :func:`probe_model` found about one model.

    ``head_error`` is None when the head applied by hand (logit multiplier and soft-cap included) reproduces
    ``model(...).logits``, else the reason. ``packing`` is ``"position_ids"`` (restarting positions alone keep
    the documents of a row apart), ``"explicit_mask"`` (explicit block masks do) or ``"unsupported"`` (nothing
    does; ``packing_reason`` says why). Deviations are relative max-abs errors.
    """

    family: str
    multiplier: float | None
    head_deviation: float
    head_error: str | None
    packing: str
    packed_deviation: float
    packing_reason: str | None


_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PROBES_BY_ARCHITECTURE: dict[tuple, ModelProbe] = {}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-6))


def probe_tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of the probe's checks for weights of ``dtype``."""
    return 1e-4 if dtype in (torch.float32, torch.float64) else 5e-2


@torch.no_grad()
def _run_probe(inner: nn.Module) -> ModelProbe:
    config = inner.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    family = str(
        getattr(text, "model_type", None) or getattr(config, "model_type", None) or type(inner).__name__
    )
    backbone, head, softcap = split_unchecked(inner)
    first = next(inner.parameters())
    device, tol = first.device, probe_tolerance(first.dtype)
    vocab = int(getattr(text, "vocab_size", None) or head.weight.shape[0])
    low, high = min(3, vocab - 1), min(vocab, 1000)
    gen = torch.Generator().manual_seed(0)
    a, a2, b = (torch.randint(low, high, (n,), generator=gen).to(device) for n in (5, 5, 7))

    def hidden(ids, positions=None, attention_mask=None):
        out = backbone(
            input_ids=ids[None],
            position_ids=None if positions is None else positions[None],
            attention_mask=attention_mask,
            use_cache=False,
        )
        return out[0][0]

    expected = inner(input_ids=b[None], use_cache=False).logits[0].float()
    alone = hidden(b)
    head_deviation = _relative(softcap_logits(head(alone), softcap), expected)
    head_error = None
    if not head_deviation <= tol:
        head_error = (
            "the LM head applied to the final hidden states differs from model(...).logits (relative error "
            f"{head_deviation:.3g}): the family transforms its logits in a way hf-select does not know"
        )
    positions = torch.cat([torch.arange(5, device=device), torch.arange(7, device=device)])

    def packed_deviation(explicit: bool) -> float:
        mask = packed_attention_masks(inner, positions[None]) if explicit else None
        with_a = hidden(torch.cat([a, b]), positions, mask)[5:]
        with_a2 = hidden(torch.cat([a2, b]), positions, mask)[5:]
        return max(_relative(with_a, alone), _relative(with_a2, with_a))

    packing, reason = "position_ids", None
    deviation = packed_deviation(False)
    if not deviation <= tol:
        failure = None
        try:
            explicit = packed_deviation(True)
        except Exception as error:  # the forward refuses explicit masks
            explicit, failure = math.inf, f"{type(error).__name__}: {error}"
        if explicit <= tol:
            packing = "explicit_mask"
        else:
            packing = "unsupported"
            reason = (
                f"the second document of a packed row changes by {deviation:.3g} (relative) with the first "
                "document of its row, even with explicit block-diagonal masks"
                + (f" ({failure})" if failure else "")
                + ": a recurrent or linear-attention state that does not reset at document starts"
            )
    return ModelProbe(family, head.multiplier, head_deviation, head_error, packing, deviation, reason)


def probe_model(model: nn.Module) -> ModelProbe:
    """Check once per model (cached per instance, and per architecture: class, config, attention
    implementation and dtype) that hf-select's hand-applied pieces reproduce the model's own forward.

    Two checks on a few random tokens, in eval mode without gradients (training flags are restored):

    * the LM head applied by hand to the final hidden states (logit multiplier, soft-cap) equals
      ``model(...).logits``;
    * the second document of a packed 2-document row (positions restarting) equals that document alone and
      does not change when the first document does. A family failing with ``position_ids`` alone is retried
      with explicit block-diagonal masks (:func:`packed_attention_masks`).

    Tolerance: :func:`probe_tolerance` (1e-4 relative for float32 weights, 5e-2 for half precision). Returns a
    :class:`ModelProbe`; :func:`split_causal_lm` and :func:`prepare_model_inputs` act on it.
    """
    inner = unwrap_model(model)
    probe = _PROBES.get(inner)
    if probe is not None:
        return probe
    # what the checks depend on: the architecture, its config (attention implementation included) and dtype,
    # not the weights; copies of a model (student / reference, deep copies) share one probe
    config = getattr(inner, "config", None)
    first = next(inner.parameters(), None)
    key = (
        type(inner),
        config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else id(inner),
        getattr(config, "_attn_implementation", None),
        first.dtype if first is not None else None,
        id(inner) if "forward" in vars(inner) else None,  # a patched forward is an architecture of its own
    )
    probe = _PROBES_BY_ARCHITECTURE.get(key)
    if probe is None:
        flags = [(module, module.training) for module in inner.modules()]
        inner.eval()
        try:
            probe = _run_probe(inner)
        finally:
            for module, training in flags:
                module.training = training
        _PROBES_BY_ARCHITECTURE[key] = probe
    _PROBES[inner] = probe
    return probe
