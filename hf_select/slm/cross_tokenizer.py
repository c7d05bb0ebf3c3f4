"""Reference losses across tokenizers: weak-to-strong RHO-1 with different vocabularies.

RHO-1 (Lin et al., arXiv 2404.07965) needs a reference loss for every *student* token, which is only direct
when both models share a tokenizer (the paper leaves other vocabularies as future work). We project through
characters:

1. every reference token's loss is spread evenly over the characters of its span (its offset mapping);
2. a student token's reference loss is the sum of the per-character losses over its span.

The total loss of any character span whose ends are token boundaries of both tokenizers is conserved (it is the
negative log-likelihood the reference assigns to those characters given the text before them). Tokens without
characters (BOS, EOS, other special tokens) receive 0 and their own loss is dropped; tokens whose spans overlap
(a multi-byte character split by a byte-level tokenizer) each receive the whole character's loss share.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..packing import special_token_ids
from ..token_loss import per_token_loss


def per_character_losses(
    losses: Sequence[float], offsets: Sequence[tuple[int, int]], text_length: int
) -> np.ndarray:
    """Loss per character ``[text_length]``: each token's loss spread evenly over its span."""
    if len(losses) != len(offsets):
        raise ValueError(f"{len(losses)} losses for {len(offsets)} offsets")
    chars = np.zeros(text_length, dtype=np.float64)
    for loss, (start, end) in zip(losses, offsets):
        if end > start:
            chars[start:end] += float(loss) / (end - start)
    return chars


def project_token_losses(
    source_losses: Sequence[float],
    source_offsets: Sequence[tuple[int, int]],
    target_offsets: Sequence[tuple[int, int]],
    text_length: int | None = None,
) -> np.ndarray:
    """Project per-token losses of one tokenisation of a text onto another tokenisation of the same text.

    Args:
        source_losses: loss of every source (reference) token.
        source_offsets: ``(start, end)`` character span of every source token (``(0, 0)`` for special tokens).
        target_offsets: character spans of the target (student) tokens.
        text_length: characters in the text (default: the largest offset).

    Returns:
        float64 array, one projected loss per target token.
    """
    if text_length is None:
        text_length = max([e for _, e in source_offsets] + [e for _, e in target_offsets] + [0])
    chars = per_character_losses(source_losses, source_offsets, text_length)
    cumulative = np.concatenate([[0.0], np.cumsum(chars)])
    starts = np.array([s for s, _ in target_offsets], dtype=np.int64).clip(0, text_length)
    ends = np.array([e for _, e in target_offsets], dtype=np.int64).clip(0, text_length)
    return np.where(ends > starts, cumulative[ends] - cumulative[starts.clip(max=ends)], 0.0)


def _encode(tokenizer, texts, add_bos: bool, add_eos: bool):
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = [], []
    bos, eos = special_token_ids(tokenizer, add_bos, add_eos)
    for x, off in zip(enc.input_ids, enc.offset_mapping):
        ids.append(bos + list(x) + eos)
        offsets.append([(0, 0)] * len(bos) + [tuple(o) for o in off] + [(0, 0)] * len(eos))
    return ids, offsets


def cross_tokenizer_reference_losses(
    texts: Sequence[str],
    ref_model: nn.Module,
    ref_tokenizer,
    student_tokenizer,
    batch_size: int = 8,
    max_length: int | None = None,
) -> list[dict[str, list]]:
    """Reference losses of ``ref_model`` for each document, projected onto the student's tokens.

    Each document is scored on its own by the reference (BOS + tokens, truncated to ``max_length``) and
    projected onto the student's encoding BOS + tokens + EOS (as :func:`hf_select.packing.document_token_ids`
    builds it). Returns per document ``input_ids`` (student) and ``ref_loss`` (aligned with them). Pack them
    with ``pack_documents(..., columns={"ref_loss": ...})`` and ``overflow="discard"`` so that every trained
    token keeps the context its reference loss saw.
    """
    ref_ids, ref_offsets = _encode(ref_tokenizer, texts, add_bos=True, add_eos=False)
    student_ids, student_offsets = _encode(student_tokenizer, texts, add_bos=True, add_eos=True)
    device = next(ref_model.parameters()).device
    # length-sorted batches waste little compute on padding; results go back in the input order
    order = sorted(range(len(texts)), key=lambda i: len(ref_ids[i]))
    out: list[dict[str, list] | None] = [None] * len(texts)
    pad = ref_tokenizer.pad_token_id or 0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        chunk = [ref_ids[i][:max_length] if max_length else ref_ids[i] for i in batch]
        length = max(len(ids) for ids in chunk)
        input_ids = torch.tensor([ids + [pad] * (length - len(ids)) for ids in chunk], device=device)
        attention = torch.tensor([[1] * len(ids) + [0] * (length - len(ids)) for ids in chunk], device=device)
        losses, _ = per_token_loss(ref_model, input_ids, attention)
        for j, (i, ids) in enumerate(zip(batch, chunk)):
            projected = project_token_losses(
                losses[j, : len(ids)].tolist(), ref_offsets[i][: len(ids)], student_offsets[i], len(texts[i])
            )
            out[i] = {"input_ids": student_ids[i], "ref_loss": projected.astype(np.float32).tolist()}
    return out
