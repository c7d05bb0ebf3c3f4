"""Greedy generation for many prompts at once: left-padded batches, KV-cached, with per-row budgets and stops.

:func:`generate_greedy` is the one greedy-generation function of the project. Each batch is one left-padded
``model.generate`` call (the KV cache makes every decoding step one token per row) with a stopping criterion
that ends each row on its own -- at its own new-token budget, or when a caller's ``stop(index, new_token_ids)``
or one of ``stop_strings`` says its answer is complete -- so that a row's output does not depend on what else is
in the batch (greedy decoding of a left-padded row equals that of the row alone, up to floating-point summation
order). Prompts are sorted by length and generated ``batch_size`` at a time; ``batch_size=None`` generates them
as one batch in the order given (for an attention probe around the call, whose row offsets come from
:func:`left_pad`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

__all__ = ["generate_greedy", "left_pad"]


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("greedy generation needs a tokenizer with a pad or EOS token")
    return int(pad)


def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``input_ids`` and ``attention_mask`` ``[len(rows), max_len]`` with left padding, and each row's offset."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    offsets = []
    for i, row in enumerate(rows):
        offset = length - len(row)
        ids[i, offset:] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, offset:] = 1
        offsets.append(offset)
    return ids, mask, offsets


class _RowStops(StoppingCriteria):
    """Ends row ``i`` once it generated ``budgets[i]`` tokens or ``stop(i, new_ids)`` is true; records where."""

    def __init__(self, prompt_length: int, budgets: Sequence[int], stop: Callable | None):
        self.prompt_length, self.budgets, self.stop = prompt_length, list(budgets), stop
        self.lengths: list[int | None] = [None] * len(budgets)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids.shape[1] - self.prompt_length
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for i, length in enumerate(self.lengths):
            if length is not None:
                done[i] = True
                continue
            if new >= self.budgets[i] or (
                self.stop is not None and self.stop(i, input_ids[i, self.prompt_length :].tolist())
            ):
                self.lengths[i] = new
                done[i] = True
        return done


def _generate_batch(model, pad: int, eos: set[int], rows, budgets, stop, logits_processor=None) -> list[list[int]]:
    """One left-padded ``model.generate`` call; each row's new tokens, cut at its stop and at EOS."""
    device = next(model.parameters()).device
    ids, mask, _ = left_pad(rows, pad)
    stops = _RowStops(ids.shape[1], budgets, stop)
    generated = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max(budgets),
        do_sample=False,
        pad_token_id=pad,
        stopping_criteria=StoppingCriteriaList([stops]),
        logits_processor=logits_processor,
    )
    out = []
    for row in range(len(rows)):
        tokens = generated[row, ids.shape[1] :].tolist()
        if stops.lengths[row] is not None:
            tokens = tokens[: stops.lengths[row]]
        out.append(tokens[: next((i for i, t in enumerate(tokens) if t in eos), len(tokens))])
    return out


def _eos_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    if tokenizer.eos_token_id is not None:
        eos.add(tokenizer.eos_token_id)
    return eos


@torch.no_grad()
def generate_greedy(
    model,
    tokenizer,
    prompts: Sequence[str] | None = None,
    max_new_tokens: int | Sequence[int] = 32,
    *,
    input_ids: Sequence[Sequence[int]] | None = None,
    batch_size: int | None = 8,
    add_special_tokens: bool = True,
    stop: Callable[[int, list[int]], bool] | None = None,
    stop_strings: Sequence[str] | None = None,
    cut_at_stop: bool = False,
    decode: bool = True,
    logits_processor=None,
) -> list[str] | list[list[int]]:
    """Greedy continuations of ``prompts`` (or of the token ids ``input_ids``), in the order given.

    Args:
        model: a causal LM (a DDP/FSDP/DeepSpeed wrapper is unwrapped).
        tokenizer: encodes ``prompts``, decodes the outputs and gives the pad (else EOS) id.
        prompts: texts, encoded with ``add_special_tokens``; or None when ``input_ids`` is given.
        max_new_tokens: budget for every prompt, or one per prompt.
        input_ids: the prompts' token ids (any lengths; they are left-padded).
        batch_size: prompts per ``model.generate`` call, sorted by length so that a batch wastes little compute on
            padding; None: all prompts in one batch, in the order given.
        stop: ``stop(index, new_token_ids) -> bool`` (``index`` into the prompts), checked after every step for
            the unfinished rows; a row whose stop is true ends there.
        stop_strings: a row also ends once its decoded continuation contains one of these (the string is kept,
            unless ``cut_at_stop``).
        cut_at_stop: cut each text before the first of ``stop_strings`` it holds (lm-eval ``generate_until``).
        decode: return texts (special tokens skipped); False returns the new token ids (EOS and padding removed).
        logits_processor: optional ``transformers.LogitsProcessorList`` (e.g. one that constrains a format). It
            sees the whole left-padded rows in the order given (the prompts take the first ``max(len(prompt))``
            columns), so it needs ``batch_size=None``.
    """
    from .model_adapter import unwrap_model

    if input_ids is None and prompts is None:
        raise ValueError("generate_greedy needs prompts or input_ids")
    if logits_processor is not None and batch_size is not None:
        raise ValueError("a logits_processor sees the rows in the order given: pass batch_size=None with it")
    encoded = (
        [list(ids) for ids in input_ids]
        if input_ids is not None
        else [tokenizer(p, add_special_tokens=add_special_tokens).input_ids for p in prompts]
    )
    if not encoded:
        return []
    budgets = [int(max_new_tokens)] * len(encoded) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != len(encoded) or min(budgets) < 1:
        raise ValueError("max_new_tokens must be a positive int or one positive int per prompt")
    model, pad = unwrap_model(model), _pad_id(tokenizer)
    eos, strings = _eos_ids(model, tokenizer), tuple(s for s in stop_strings or () if s)

    def ends(index: int, new_ids: list[int]) -> bool:
        if stop is not None and stop(index, new_ids):
            return True
        return bool(strings) and any(s in tokenizer.decode(new_ids, skip_special_tokens=True) for s in strings)

    order = list(range(len(encoded))) if batch_size is None else sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    size = len(order) if batch_size is None else batch_size
    tokens: list[list[int]] = [[] for _ in encoded]
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        rows = _generate_batch(model, pad, eos, [encoded[i] for i in chunk], [budgets[i] for i in chunk],
                               (lambda r, new, chunk=chunk: ends(chunk[r], new)) if stop or strings else None,
                               logits_processor)  # fmt: skip
        for i, new in zip(chunk, rows):
            tokens[i] = new
    if not decode:
        return tokens
    texts = [tokenizer.decode(new, skip_special_tokens=True) for new in tokens]
    if cut_at_stop:
        for s in strings:
            texts = [text.split(s)[0] for text in texts]
    return texts
