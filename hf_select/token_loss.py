"""Exact, memory-lean per-token cross-entropy for any transformers causal LM, padded or packed.

Convention: ``losses[b, t]`` is the float32 cross-entropy of predicting token ``t`` (``input_ids[b, t]``, or
``labels[b, t]`` when labels are given) from the tokens before it in the same document. Positions that are not
predicted hold ``0.0`` and ``False`` in the returned mask: the first token of every row and of every packed
document, padding, the first real token after left padding, and positions whose label is ``-100``.

Packed rows are rows whose ``position_ids`` restart (0, 1, 2, 0, 1, ...). They run with ``attention_mask=None``
and no KV cache so that transformers builds a block-diagonal causal mask from the positions (sdpa and eager);
padding inside a packed batch becomes singleton segments that nobody attends to.

Exactness on every family: the LM head is applied by hand (:class:`LogitHead`, with the family's logit
multiplier: Cohere ``logit_scale``, Granite ``logits_scaling``, Falcon-H1 ``lm_head_multiplier``; then Gemma's
``final_logit_softcapping``; :mod:`hf_select.logit_head`), and :func:`~hf_select.conformance.probe_model` checks once per model that this reproduces
``model(...).logits`` and that a packed row equals its documents alone. A family failing a check gets the fix
(explicit block masks for gpt-oss) or a clear error naming it (Qwen3-Next: packed rows).

The logits are never materialised for the whole batch: the final hidden states of the predicted positions are
projected through the LM head in chunks of ``chunk_size`` tokens and reduced to a loss at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .conformance import probe_model
from .logit_head import LogitHead, packed_attention_masks, softcap_logits, split_unchecked
from .model_adapter import UnsupportedModelError

IGNORE_INDEX = -100


class TokenLosses(NamedTuple):
    """Per-token losses ``[batch, seq]`` (float32) and the mask of predicted positions ``[batch, seq]``."""

    losses: torch.Tensor
    mask: torch.Tensor


def positions_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens (correct for left padding); padding gets 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0) * attention_mask.long()


def is_packed(position_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> bool:
    """Whether any row holds more than one document (positions restart between two real tokens)."""
    restart = position_ids[:, 1:] != position_ids[:, :-1] + 1
    if attention_mask is not None:
        real = attention_mask.bool()
        restart = restart & real[:, 1:] & real[:, :-1]
    return bool(restart.any())


def prediction_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Positions whose token is predicted from a previous token of the same document."""
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    same_doc = position_ids[:, 1:] == position_ids[:, :-1] + 1
    if attention_mask is not None:
        real = attention_mask.bool()
        same_doc = same_doc & real[:, 1:] & real[:, :-1]
    mask[:, 1:] = same_doc
    if labels is not None:
        mask &= labels != IGNORE_INDEX
    return mask


def prepare_model_inputs(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    model: nn.Module | None = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Forward kwargs that are exact for padded and packed rows, and the position ids used.

    Packed rows drop the 2D mask (transformers then derives the block-diagonal mask from ``position_ids``) and
    turn padding into singleton segments (position 0). Unpacked rows keep the mask and get position ids that
    ignore left padding.

    With ``model`` given, packed rows follow the model's :class:`ModelProbe`: families whose own forward loses
    the document boundaries (gpt-oss builds its masks without ``position_ids``) get explicit block-diagonal
    masks, and families that cannot keep documents apart at all (a recurrent / linear-attention state, as in
    Qwen3-Next or the Mamba hybrids) raise :class:`~hf_select.model_adapter.UnsupportedModelError`.
    """
    if position_ids is None:
        position_ids = (
            positions_from_attention_mask(attention_mask)
            if attention_mask is not None
            else torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        )
    if is_packed(position_ids, attention_mask):
        if attention_mask is not None:
            position_ids = position_ids.masked_fill(~attention_mask.bool(), 0)
        kwargs = {"input_ids": input_ids, "attention_mask": None, "position_ids": position_ids}
        if model is not None:
            probe = probe_model(model)
            if probe.packing == "unsupported":
                raise UnsupportedModelError(
                    f"{probe.family}: packed rows are not exact ({probe.packing_reason}); pass one document per "
                    "row (padding instead of packing)"
                )
            if probe.packing == "explicit_mask":
                kwargs["attention_mask"] = packed_attention_masks(model, position_ids)
    else:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
    return kwargs, position_ids


def split_causal_lm(model: nn.Module) -> tuple[nn.Module, LogitHead, float | None]:
    """The backbone (returns final hidden states), the output head (:class:`LogitHead`: ``lm_head``, the
    family's logit multiplier, float32) and the final logit soft-cap of a causal LM.

    The first call on a model runs :func:`probe_model` (cached): a family whose logits the head applied by hand
    does not reproduce raises :class:`~hf_select.model_adapter.UnsupportedModelError` naming it.
    """
    probe = probe_model(model)
    if probe.head_error is not None:
        raise UnsupportedModelError(f"{probe.family}: {probe.head_error}")
    return split_unchecked(model)


def logits_to_losses(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    head: nn.Module,
    softcap: float | None = None,
    chunk_size: int = 2048,
) -> torch.Tensor:
    """Float32 cross-entropy of ``targets [N]`` from hidden states ``[N, E]``, ``chunk_size`` rows at a time.

    ``head`` is the :class:`LogitHead` of :func:`split_causal_lm` (logit multiplier and float32 matmul included).
    """
    out = torch.empty(targets.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, targets.shape[0], chunk_size):
        stop = start + chunk_size
        logits = softcap_logits(head(hidden[start:stop]).float(), softcap)
        out[start:stop] = F.cross_entropy(logits, targets[start:stop], reduction="none")
    return out


def final_hidden_states(model: nn.Module, **model_inputs) -> torch.Tensor:
    """Final (normed) hidden states ``[batch, seq, hidden]`` of a causal LM, without computing logits."""
    backbone, _, _ = split_causal_lm(model)
    outputs = backbone(**model_inputs, use_cache=False)
    return outputs[0]


def per_token_loss(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    chunk_size: int = 2048,
    hidden_states: torch.Tensor | None = None,
) -> TokenLosses:
    """Per-token float32 cross-entropy of a causal LM; see the module docstring for the alignment convention.

    Args:
        model: any transformers causal LM (peft-wrapped models too).
        input_ids: ``[batch, seq]`` token ids.
        attention_mask: ``[batch, seq]`` 1 for real tokens; left or right padding.
        position_ids: ``[batch, seq]``; restarting positions mark packed documents.
        labels: optional targets aligned with ``input_ids`` (HF convention, *not* shifted); ``-100`` skips.
        chunk_size: number of predicted tokens projected through the LM head at once (bounds peak memory at
            ``chunk_size x vocab`` float32 logits).
        hidden_states: final hidden states if the caller already has them (skips the backbone forward).

    Runs without gradients. Returns a :class:`TokenLosses` ``(losses, mask)``.
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
    model_inputs, position_ids = prepare_model_inputs(input_ids, attention_mask, position_ids, model)
    mask = prediction_mask(input_ids, attention_mask, position_ids, labels)
    targets_all = labels if labels is not None else input_ids
    with torch.no_grad():
        _, head, softcap = split_causal_lm(model)
        if hidden_states is None:
            hidden_states = final_hidden_states(model, **model_inputs)
        rows, cols = mask.nonzero(as_tuple=True)
        hidden = hidden_states[rows, cols - 1]
        token_losses = logits_to_losses(hidden, targets_all[rows, cols], head, softcap, chunk_size)
    losses = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    losses[rows, cols] = token_losses
    return TokenLosses(losses, mask)


def labelled_positions_loss(
    model: nn.Module, inputs: dict[str, torch.Tensor], num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """The causal-LM training loss of ``model(**inputs).loss``, with the LM head applied at labelled positions only.

    ``inputs`` holds ``labels`` (HF convention: not shifted, ``-100`` skips) and the model inputs. Returns the
    float32 cross-entropy summed over the predicted tokens and divided by ``num_items_in_batch`` (the Trainer's
    gradient-accumulation-safe normaliser) or, without it, averaged. Differentiable. Same value and gradients as
    the transformers loss; faster when many positions carry no label (prompt-masked fine-tuning, answer-only
    rows), since a small model's LM head is a large share of each step.
    """
    labels = inputs["labels"]
    backbone, head, softcap = split_causal_lm(model)
    model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "use_cache")}
    positions = model_inputs.get("position_ids")
    if positions is not None and model_inputs.get("attention_mask") is None and is_packed(positions):
        packed, _ = prepare_model_inputs(model_inputs["input_ids"], None, positions, model)
        model_inputs.update(packed)
    hidden = backbone(**model_inputs, use_cache=False)[0]
    targets = labels[:, 1:]
    rows, cols = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    losses = logits_to_losses(hidden[rows, cols], targets[rows, cols], head, softcap)
    return losses.sum() / (num_items_in_batch if num_items_in_batch is not None else max(len(rows), 1))


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Index of the document each position belongs to within its row (0 for unpacked rows)."""
    restart = torch.zeros_like(position_ids, dtype=torch.long)
    restart[:, 1:] = (position_ids[:, 1:] != position_ids[:, :-1] + 1).long()
    return restart.cumsum(-1)


def document_losses(
    losses: torch.Tensor,
    mask: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Mean loss and predicted-token count per document.

    Returns flat tensors ``row``, ``document`` (index within the row), ``loss_sum``, ``num_tokens`` and
    ``mean_loss`` (NaN for a document with no predicted token), one entry per document that has at least
    one real position (``attention_mask``; every position when it is None). Without ``position_ids`` every
    row is one document.
    """
    docs = (
        document_ids(position_ids) if position_ids is not None else torch.zeros_like(mask, dtype=torch.long)
    )
    num_docs = int(docs.max()) + 1 if docs.numel() else 1
    flat = torch.arange(mask.shape[0], device=mask.device)[:, None] * num_docs + docs
    size = mask.shape[0] * num_docs
    sums = torch.zeros(size, dtype=torch.float64, device=mask.device).index_add_(
        0, flat.flatten(), (losses.double() * mask).flatten()
    )
    counts = torch.zeros(size, dtype=torch.long, device=mask.device).index_add_(
        0, flat.flatten(), mask.long().flatten()
    )
    present = torch.zeros(size, dtype=torch.bool, device=mask.device)
    real = attention_mask.bool() if attention_mask is not None else torch.ones_like(mask)
    present[flat[real]] = True
    keep = present.nonzero(as_tuple=True)[0]
    mean = (sums[keep] / counts[keep].clamp(min=1)).float()
    mean[counts[keep] == 0] = float("nan")
    return {
        "row": keep // num_docs,
        "document": keep % num_docs,
        "loss_sum": sums[keep],
        "num_tokens": counts[keep],
        "mean_loss": mean,
    }


def bits_per_byte(nll: float | Sequence[float], num_bytes: int | Sequence[int]) -> float:
    """Summed negative log-likelihood in nats / ln 2 / UTF-8 bytes, pooled over items (lm-eval ``bits_per_byte``)."""
    total_nll = float(sum(nll)) if isinstance(nll, Sequence) else float(nll)
    total_bytes = int(sum(num_bytes)) if isinstance(num_bytes, Sequence) else int(num_bytes)
    if total_bytes <= 0:
        raise ValueError("bits per byte needs at least one byte of text")
    return total_nll / math.log(2) / total_bytes
