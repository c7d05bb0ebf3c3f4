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
``final_logit_softcapping``), and :func:`probe_model` checks once per model that this reproduces
``model(...).logits`` and that a packed row equals its documents alone. A family failing a check gets the fix
(explicit block masks for gpt-oss) or a clear error naming it (Qwen3-Next: packed rows).

The logits are never materialised for the whole batch: the final hidden states of the predicted positions are
projected through the LM head in chunks of ``chunk_size`` tokens and reduced to a loss at once.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .model_adapter import UnsupportedModelError, unsharded_root, unwrap_model

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


def _decoder_of(inner: nn.Module) -> nn.Module | None:
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


def _split_unchecked(model: nn.Module) -> tuple[nn.Module, LogitHead, float | None]:
    inner = unwrap_model(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    backbone = _decoder_of(inner)
    if head is None or backbone is None:
        model_type = getattr(getattr(inner, "config", None), "model_type", None)
        raise UnsupportedModelError(
            f"{type(inner).__name__} (model_type={model_type!r}) is not a causal LM with a decoder and an "
            "output embedding (lm_head)"
        )
    config = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
    softcap = getattr(config, "final_logit_softcapping", None)
    return backbone, LogitHead(head, logit_multiplier(inner.config)), softcap


def split_causal_lm(model: nn.Module) -> tuple[nn.Module, LogitHead, float | None]:
    """The backbone (returns final hidden states), the output head (:class:`LogitHead`: ``lm_head``, the
    family's logit multiplier, float32) and the final logit soft-cap of a causal LM.

    The first call on a model runs :func:`probe_model` (cached): a family whose logits the head applied by hand
    does not reproduce raises :class:`~hf_select.model_adapter.UnsupportedModelError` naming it.
    """
    probe = probe_model(model)
    if probe.head_error is not None:
        raise UnsupportedModelError(f"{probe.family}: {probe.head_error}")
    return _split_unchecked(model)


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

    backbone, _, _ = _split_unchecked(model)
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
    backbone, head, softcap = _split_unchecked(inner)
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
            with unsharded_root(inner):
                probe = _run_probe(inner)
        finally:
            for module, training in flags:
                module.training = training
        _PROBES_BY_ARCHITECTURE[key] = probe
    _PROBES[inner] = probe
    return probe


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
    with torch.no_grad(), unsharded_root(model):
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
