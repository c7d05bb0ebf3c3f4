"""Reference losses across tokenizers: weak-to-strong RHO-1 with different vocabularies.

RHO-1 (Lin et al., arXiv 2404.07965) needs a reference loss for every *student* token, which is only direct
when both models share a tokenizer (the paper leaves other vocabularies as future work). We project through
characters. A student token's reference loss is the negative log-likelihood the reference assigns to the
characters of the student token's span, given the text before them:

1. a reference token lying inside a student token gives it its whole loss;
2. a reference token cut by student token boundaries is split at the cuts by the reference's own probabilities
   (``split="exact"``): the loss of its first ``j`` characters is ``-log P(prefix_j)``, with ``P(prefix_j)`` the
   total next-token probability of the reference tokens whose text starts with those ``j`` characters (one
   contiguous range of the reference vocabulary sorted by text); each later piece gets the rest, so the pieces
   of a token always sum to its loss. ``split="uniform"`` spreads the loss evenly over the characters instead
   (biased: a word's first letter carries most of its loss -- see ``docs/slm.md``);
3. the student's EOS gets the reference's loss of its own EOS after the document (both mean "the document
   ends here"), when the reference has an EOS and the document was not truncated.

The total loss of any character span whose ends are token boundaries of both tokenizers is conserved.
Student tokens that are not covered get ``NaN``, which :class:`~hf_select.trainer_ext.slm_trainer.SLMTrainer`
treats as "no reference value" (never selected, not counted in any scope): special tokens (BOS and other
empty spans), characters past the reference's ``max_length`` window, and characters the reference did not
score (its first token, for a reference without BOS).

The remaining approximation of ``split="exact"``: ``P(prefix_j)`` counts only the reference tokens that contain
the whole prefix. The exact prefix probability also sums over tokenisations that reach the prefix in several
tokens (``"c" + "at"`` for the prefix ``"cat"``), which needs further forwards; these paths carry little mass
for a trained model, so ``-log P(prefix_j)`` is a slight upper bound of the first pieces' loss (SmolLM2, with
the two-token paths summed: median 4e-5 nats, mean 0.017, max 0.35 over 30 cuts;
``benchmarks/cross_tokenizer_split.py``), and the token's total stays exact. Reference tokens
that are not a clean piece of the text (byte fallbacks of a multi-byte character, tokens a normaliser changed)
are split uniformly. Leading white space that a tokenizer leaves out of its offsets (``trim_offsets``) is
given back to the token whose text holds it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..packing import special_token_ids
from ..token_loss import (
    final_hidden_states,
    logits_to_losses,
    per_token_loss,
    prepare_model_inputs,
    softcap_logits,
    split_causal_lm,
)

SPLITS = ("exact", "uniform")


def per_character_losses(
    losses: Sequence[float], offsets: Sequence[tuple[int, int]], text_length: int
) -> np.ndarray:
    """Loss per character ``[text_length]``: each token's loss spread evenly over its span (NaN losses give
    nothing)."""
    if len(losses) != len(offsets):
        raise ValueError(f"{len(losses)} losses for {len(offsets)} offsets")
    chars = np.zeros(text_length, dtype=np.float64)
    for loss, (start, end) in zip(losses, offsets):
        if end > start and np.isfinite(loss):
            chars[start:end] += float(loss) / (end - start)
    return chars


def _scored_region(losses: np.ndarray, offsets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """``[start, end)`` of the characters the source scored: from the end of the last unscored token before the
    first scored one (0 when none) to the end of the last scored token."""
    scored = [i for i, (s, e) in enumerate(offsets) if e > s and np.isfinite(losses[i])]
    if not scored:
        return 0, 0
    first = scored[0]
    start = max([e for i, (s, e) in enumerate(offsets[:first]) if e > s] + [0])
    return start, max(offsets[i][1] for i in scored)


def project_token_losses(
    source_losses: Sequence[float],
    source_offsets: Sequence[tuple[int, int]],
    target_offsets: Sequence[tuple[int, int]],
    text_length: int | None = None,
    prefix_losses: dict[tuple[int, int], float] | None = None,
) -> np.ndarray:
    """Project per-token losses of one tokenisation of a text onto another tokenisation of the same text.

    Args:
        source_losses: loss of every source (reference) token; ``NaN`` for a token that was not scored.
        source_offsets: ``(start, end)`` character span of every source token (``(0, 0)`` for special tokens).
        target_offsets: character spans of the target (student) tokens.
        text_length: characters in the text (default: the largest offset).
        prefix_losses: ``{(source token, character boundary b): loss of the token's characters before b}`` for
            boundaries strictly inside a token's span (``split="exact"``); other cuts split uniformly.

    Returns:
        float64 array, one projected loss per target token; ``NaN`` for a target token with an empty span or one
        reaching outside the scored characters.
    """
    losses = np.asarray(source_losses, dtype=np.float64)
    if text_length is None:
        text_length = max([e for _, e in source_offsets] + [e for _, e in target_offsets] + [0])
    chars = per_character_losses(losses, source_offsets, text_length)
    cumulative = np.concatenate([[0.0], np.cumsum(chars)])
    for (token, boundary), loss in (prefix_losses or {}).items():
        start, end = source_offsets[token]
        if not start < boundary < end:
            raise ValueError(f"boundary {boundary} is not inside source token {token}'s span {(start, end)}")
        share = min(max(float(loss), 0.0), float(losses[token]))
        # the characters before ``start`` keep their sum; this token contributes ``share`` up to the cut
        cumulative[boundary] = cumulative[start] + share
    region_start, region_end = _scored_region(losses, source_offsets)
    starts = np.array([s for s, _ in target_offsets], dtype=np.int64).clip(0, text_length)
    ends = np.array([e for _, e in target_offsets], dtype=np.int64).clip(0, text_length)
    inside = (ends > starts) & (starts >= region_start) & (ends <= region_end)
    return np.where(inside, cumulative[ends] - cumulative[starts.clip(max=ends)], np.nan)


class _PrefixIndex:
    """The reference vocabulary sorted by decoded text: the tokens whose text starts with a given prefix form one
    contiguous range. Special tokens and tokens that do not decode to clean text (partial UTF-8 bytes) are left
    out: they never produce that text."""

    def __init__(self, tokenizer, vocab_size: int):
        n = min(len(tokenizer), vocab_size)
        self.texts = tokenizer.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False)
        special = set(tokenizer.all_special_ids)
        pairs = sorted((t, i) for i, t in enumerate(self.texts) if t and i not in special and "\ufffd" not in t)
        self.keys = [t for t, _ in pairs]
        self.order = torch.tensor([i for _, i in pairs], dtype=torch.long)

    def range(self, prefix: str) -> tuple[int, int]:
        return bisect.bisect_left(self.keys, prefix), bisect.bisect_left(self.keys, prefix + "\U0010ffff")


def _clean_spans(ids, offsets, text: str, texts: list[str]) -> list[tuple[int, int, bool]]:
    """``(start, end, clean)`` per token: ``clean`` when the span's text is the token's decoded text; a span
    whose leading white space was trimmed from the offsets is widened back over it."""
    out, previous_end = [], 0
    for token, (start, end) in zip(ids, offsets):
        if end <= start or token >= len(texts):
            out.append((start, end, False))
            continue
        decoded, piece = texts[token], text[start:end]
        extra = len(decoded) - len(piece)
        if decoded == piece:
            out.append((start, end, True))
        elif extra > 0 and decoded.endswith(piece) and start - extra >= previous_end and (
            text[start - extra : start] == decoded[:extra] and not decoded[:extra].strip()
        ):
            out.append((start - extra, end, True))
        else:
            out.append((start, end, False))
        previous_end = max(previous_end, end)
    return out


def _encode(tokenizer, texts, add_bos: bool, add_eos: bool):
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = [], []
    bos, eos = special_token_ids(tokenizer, add_bos, add_eos)
    for x, off in zip(enc.input_ids, enc.offset_mapping):
        ids.append(bos + list(x) + eos)
        offsets.append([(0, 0)] * len(bos) + [tuple(o) for o in off] + [(0, 0)] * len(eos))
    return ids, offsets


class CrossTokenizerProjection:
    """Projects a reference model's forward pass over one document onto the student's tokens (the rule of the
    module docstring), whoever ran the pass: :func:`cross_tokenizer_reference_losses` runs its own; another
    scorer of the same model over the same encoding (AttentionInfluence's base pass,
    :meth:`hf_select.attention_influence.AttentionInfluence.score_token_ids`'s ``base_pass_hook``) can hand
    over its own, so that one forward serves both.

    Args:
        ref_model: the reference causal LM (its LM head gives the ``split="exact"`` prefix probabilities).
        ref_tokenizer, student_tokenizer: the two tokenizers.
        split: ``"exact"`` or ``"uniform"`` (module docstring).
    """

    def __init__(self, ref_model: nn.Module, ref_tokenizer, student_tokenizer, split: str = "exact"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.ref_tokenizer = ref_tokenizer
        self.student_tokenizer = student_tokenizer
        self.split = split
        self.has_eos = ref_tokenizer.eos_token_id is not None and student_tokenizer.eos_token_id is not None
        _, self.head, self.softcap = split_causal_lm(ref_model)
        self.index = _PrefixIndex(ref_tokenizer, int(self.head.weight.shape[0])) if split == "exact" else None

    def encode_reference(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        """Reference ids and character offsets of each document: BOS + tokens + EOS
        (:func:`hf_select.packing.document_token_ids`)."""
        return _encode(self.ref_tokenizer, texts, add_bos=True, add_eos=True)

    def encode_student(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        """Student ids and character offsets of each document: BOS + tokens + EOS."""
        return _encode(self.student_tokenizer, texts, add_bos=True, add_eos=True)

    def project(
        self,
        text: str,
        ids: Sequence[int],
        offsets: Sequence[tuple[int, int]],
        token_losses: np.ndarray,
        hidden: torch.Tensor | None,
        ends_document: bool,
        student: tuple[list[int], list[tuple[int, int]]] | None = None,
    ) -> dict[str, list]:
        """``{"input_ids", "ref_loss"}`` of one document from a reference pass over ``ids``.

        Args:
            text: the document.
            ids, offsets: the reference ids the pass read (a prefix of :meth:`encode_reference`'s, with or
                without its EOS) and their offsets.
            token_losses: per-token loss of ``ids`` (:func:`hf_select.per_token_loss` alignment; NaN where not
                predicted).
            hidden: final hidden states ``[len(ids), hidden]`` of the pass (``split="exact"``; None for
                ``"uniform"``).
            ends_document: whether ``ids`` reach the end of the document: the student's EOS then gets the
                reference's EOS loss, read from ``token_losses`` when ``ids`` end with the EOS, else from the
                last hidden state (the prediction after the last token).
            student: the student's ``(ids, offsets)`` of ``text`` (default: :meth:`encode_student`).
        """
        ids, offsets = list(ids), list(offsets)
        token_losses = np.asarray(token_losses, dtype=np.float64)
        eos_id = self.ref_tokenizer.eos_token_id
        eos_loss = float("nan")
        if ends_document and self.has_eos:
            if ids and ids[-1] == eos_id and offsets[-1] == (0, 0):
                eos_loss = float(token_losses[-1])
                token_losses, offsets, ids = token_losses[:-1], offsets[:-1], ids[:-1]
            elif hidden is not None and len(ids):
                eos_loss = float(self.next_token_loss(hidden[len(ids) - 1], eos_id))
        student_ids, student_offsets = student or (x[0] for x in self.encode_student([text]))
        prefix_losses = None
        if self.index is not None:
            if hidden is None:
                raise ValueError('split="exact" needs the hidden states of the reference pass')
            spans = _clean_spans(ids, offsets, text, self.index.texts)
            offsets = [(s, e) for s, e, _ in spans]
            prefix_losses = _prefix_losses(
                ids, spans, token_losses, student_offsets, text, self.index, hidden, self.head, self.softcap
            )
        projected = project_token_losses(token_losses, offsets, student_offsets, len(text), prefix_losses)
        if self.student_tokenizer.eos_token_id is not None:
            projected[-1] = eos_loss
        return {"input_ids": list(student_ids), "ref_loss": projected.astype(np.float32).tolist()}

    def next_token_loss(self, hidden: torch.Tensor, token: int) -> float:
        """Loss of ``token`` predicted from one final hidden state (as :func:`hf_select.per_token_loss`)."""
        with torch.no_grad():
            target = torch.tensor([token], device=hidden.device)
            return float(logits_to_losses(hidden[None], target, self.head, self.softcap)[0])


def cross_tokenizer_reference_losses(
    texts: Sequence[str],
    ref_model: nn.Module,
    ref_tokenizer,
    student_tokenizer,
    batch_size: int = 8,
    max_length: int | None = None,
    split: str = "exact",
) -> list[dict[str, list]]:
    """Reference losses of ``ref_model`` for each document, projected onto the student's tokens.

    Each document is scored on its own by the reference (BOS + tokens + EOS, truncated to ``max_length``) and
    projected onto the student's encoding BOS + tokens + EOS (as :func:`hf_select.packing.document_token_ids`
    builds it); see the module docstring for the rule, ``split`` and the ``NaN`` of tokens without a reference
    value. Returns per document ``input_ids`` (student) and ``ref_loss`` (aligned with them). Pack them with
    ``pack_documents(..., columns={"ref_loss": ...})`` and ``overflow="discard"`` so that every trained token
    keeps the context its reference loss saw.
    """
    projection = CrossTokenizerProjection(ref_model, ref_tokenizer, student_tokenizer, split)
    ref_ids, ref_offsets = projection.encode_reference(texts)
    student_ids, student_offsets = projection.encode_student(texts)
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
        hidden = None
        if projection.index is not None:
            with torch.no_grad():
                model_inputs, _ = prepare_model_inputs(input_ids, attention, None, ref_model)
                hidden = final_hidden_states(ref_model, **model_inputs)
        losses, mask = per_token_loss(ref_model, input_ids, attention, hidden_states=hidden)
        for j, (i, ids) in enumerate(zip(batch, chunk)):
            n = len(ids)
            token_losses = torch.where(mask[j, :n], losses[j, :n], float("nan")).double().cpu().numpy()
            out[i] = projection.project(
                texts[i], ids, ref_offsets[i][:n], token_losses, None if hidden is None else hidden[j, :n],
                ends_document=len(ids) == len(ref_ids[i]), student=(student_ids[i], student_offsets[i]),
            )  # fmt: skip
    return out


def _prefix_losses(ids, spans, token_losses, target_offsets, text, index: _PrefixIndex, hidden, head, softcap):
    """``{(reference token, boundary): -log P(the token's text up to the boundary)}`` for every student token
    boundary strictly inside a clean, scored reference token (one LM-head row per cut token)."""
    boundaries = sorted({b for span in target_offsets for b in span})
    cuts: dict[int, list[int]] = {}
    for t, (start, end, clean) in enumerate(spans):
        if not clean or t == 0 or not np.isfinite(token_losses[t]):
            continue
        lo = bisect.bisect_right(boundaries, start)
        inner = [b for b in boundaries[lo : bisect.bisect_left(boundaries, end)] if start < b < end]
        if inner:
            cuts[t] = inner
    if not cuts:
        return {}
    tokens = sorted(cuts)
    with torch.no_grad():
        logits = softcap_logits(head(hidden[[t - 1 for t in tokens]]), softcap)
        probs = torch.softmax(logits.double(), dim=-1)[:, index.order.to(logits.device)]
        cumulative = torch.nn.functional.pad(probs.cumsum(-1), (1, 0)).cpu().numpy()
    out = {}
    for row, t in enumerate(tokens):
        start, _, _ = spans[t]
        decoded = index.texts[ids[t]]
        for b in cuts[t]:
            lo, hi = index.range(decoded[: b - start])
            mass = cumulative[row, hi] - cumulative[row, lo]
            out[(t, b)] = float(-np.log(mass)) if mass > 0 else float(token_losses[t])
    return out
