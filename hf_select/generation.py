"""Greedy generation for many prompts at once: left-padded batches sorted by length, KV-cached."""

from __future__ import annotations

from collections.abc import Sequence

import torch


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

    Prompts are sorted by token length and generated ``batch_size`` at a time with left padding, so that a
    batch wastes little compute on padding; greedy decoding of a left-padded row equals that of the row alone
    (up to floating-point summation order). ``stop_strings`` end a row early (``generate(stop_strings=...)``).
    ``input_ids`` gives the prompts' token ids directly (then ``prompts`` may be None).
    """
    if input_ids is None and prompts is None:
        raise ValueError("greedy_generate needs prompts or input_ids")
    count = len(input_ids) if input_ids is not None else len(prompts)
    if count == 0:
        return []
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("greedy_generate needs a tokenizer with a pad or EOS token")
    encoded = (
        [list(ids) for ids in input_ids]
        if input_ids is not None
        else [tokenizer(p, add_special_tokens=add_special_tokens).input_ids for p in prompts]
    )
    order = sorted(range(count), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * count
    extra = {"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        length = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), length), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(chunk):
            ids[row, length - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, length - len(encoded[i]) :] = 1
        generated = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            **extra,
        )
        for row, i in enumerate(chunk):
            out[i] = tokenizer.decode(generated[row, length:], skip_special_tokens=True)
    return out
