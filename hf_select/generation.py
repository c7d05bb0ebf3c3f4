"""Greedy generation for many prompts at once: left-padded batches, KV-cached, with per-row budgets and stops.

:func:`generate_greedy` is the one mechanism: one left-padded batch, one ``model.generate`` call (the KV cache
makes every decoding step one token per row), and a stopping criterion that ends each row on its own -- at its
own new-token budget, or when a caller's ``stop(row, new_token_ids)`` says its answer is complete -- so that a
row's output does not depend on what else is in the batch (greedy decoding of a left-padded row equals that of
the row alone, up to floating-point summation order). :func:`greedy_generate` sorts many prompts by length and
calls it ``batch_size`` at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

__all__ = ["generate_greedy", "greedy_generate", "left_pad"]


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


@torch.no_grad()
def generate_greedy(
    model,
    tokenizer,
    input_ids: Sequence[Sequence[int]],
    max_new_tokens: int | Sequence[int],
    stop: Callable[[int, list[int]], bool] | None = None,
    logits_processor=None,
) -> list[list[int]]:
    """Greedy continuations (token ids, EOS and padding removed) of the prompts ``input_ids``, in ONE batch.

    Args:
        model: a causal LM.
        tokenizer: gives the pad (else EOS) id.
        input_ids: the prompts' token ids (any lengths; they are left-padded).
        max_new_tokens: budget for every row, or one per row.
        stop: ``stop(row, new_token_ids) -> bool``, checked after every step for the unfinished rows; a row whose
            stop is true ends there (its output is the tokens generated so far).
        logits_processor: optional ``transformers.LogitsProcessorList`` (e.g. one that constrains a format); it
            sees the whole left-padded rows (the prompts take the first ``max(len(prompt))`` columns).

    Run a :func:`hf_select.attention_probe.attention_probe` with ``prefill_only=True`` around this call to read
    the prompt's attention from the same prefill (row offsets: :func:`left_pad`).
    """
    if not input_ids:
        return []
    budgets = (
        [int(max_new_tokens)] * len(input_ids) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    )
    if len(budgets) != len(input_ids) or min(budgets) < 1:
        raise ValueError("max_new_tokens must be a positive int or one positive int per prompt")
    pad = _pad_id(tokenizer)
    device = next(model.parameters()).device
    ids, mask, _ = left_pad(input_ids, pad)
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
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    if tokenizer.eos_token_id is not None:
        eos.add(tokenizer.eos_token_id)
    out = []
    for row in range(len(input_ids)):
        tokens = generated[row, ids.shape[1] :].tolist()
        if stops.lengths[row] is not None:
            tokens = tokens[: stops.lengths[row]]
        cut = next((i for i, t in enumerate(tokens) if t in eos), len(tokens))
        out.append(tokens[:cut])
    return out


@torch.no_grad()
def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[str] | None,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    add_special_tokens: bool = True,
    stop_strings: Sequence[str] | None = None,
    input_ids: Sequence[Sequence[int]] | None = None,
) -> list[str]:
    """Greedy continuations of ``prompts`` (decoded, special tokens skipped), in the order given.

    Prompts are sorted by token length and generated ``batch_size`` at a time with :func:`generate_greedy`, so
    that a batch wastes little compute on padding. ``stop_strings`` end a row once its decoded continuation
    contains one of them (the string itself is kept). ``input_ids`` gives the prompts' token ids directly (then
    ``prompts`` may be None).
    """
    if input_ids is None and prompts is None:
        raise ValueError("greedy_generate needs prompts or input_ids")
    count = len(input_ids) if input_ids is not None else len(prompts)
    if count == 0:
        return []
    _pad_id(tokenizer)
    encoded = (
        [list(ids) for ids in input_ids]
        if input_ids is not None
        else [tokenizer(p, add_special_tokens=add_special_tokens).input_ids for p in prompts]
    )
    stop = None
    if stop_strings:

        def stop(row, new_ids, _strings=tuple(stop_strings)):
            text = tokenizer.decode(new_ids, skip_special_tokens=True)
            return any(s in text for s in _strings)

    order = sorted(range(count), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * count
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        tokens = generate_greedy(model, tokenizer, [encoded[i] for i in chunk], max_new_tokens, stop)
        for i, new in zip(chunk, tokens):
            out[i] = tokenizer.decode(new, skip_special_tokens=True)
    return out
