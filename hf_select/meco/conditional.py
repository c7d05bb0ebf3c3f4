"""Conditional inference with a metadata prefix (MeCo, arXiv 2501.01956, section 5).

A MeCo model can be steered by the metadata it saw in training: prepend e.g. ``"URL: www.factquizmaster.com
\\n\\n"`` to a prompt (the paper's per-task URLs are in :data:`PAPER_TASK_URLS`). Without a prefix a
cooled-down model works as a normal LM. Inputs are built exactly as in training: ``[BOS] + tokens(prefix) +
tokens(prompt)`` with prefix and prompt tokenised separately, so the prefix tokens never merge with the text.

Each helper takes one prefix for all texts or one per text (``None`` = no prefix).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..generation import left_pad
from ..token_loss import bits_per_byte, per_token_loss
from .metadata import DEFAULT_TEMPLATE, format_metadata, tokenize_with_metadata

# Paper Table 11: the URL prepended per evaluation task.
PAPER_TASK_URLS: dict[str, str] = {
    "mmlu": "www.testprepportal.com",
    "arc": "www.sciencestudyquiz.com",
    "csqa": "www.quizsmart.com",
    "hellaswag": "www.wikihowquiz.com",
    "openbookqa": "www.factquizmaster.com",
    "piqa": "www.basicknowledgequiz.com",
}


def url_prefix(host: str, name: str = "URL", template: str = DEFAULT_TEMPLATE) -> str:
    """The prefix string for an (already normalised) metadata value, e.g. ``"URL: en.wikipedia.org\\n\\n"``."""
    return format_metadata(host, name, template)


def _per_text(prefix: str | Sequence[str | None] | None, n: int) -> list[str | None]:
    if prefix is None or isinstance(prefix, str):
        return [prefix] * n
    prefixes = list(prefix)
    if len(prefixes) != n:
        raise ValueError(f"{n} texts but {len(prefixes)} prefixes")
    return prefixes


def encode_with_prefix(
    tokenizer, texts: Sequence[str], prefix: str | Sequence[str | None] | None = None
) -> dict[str, list[list[int]]]:
    """``input_ids`` (BOS + prefix + text, no EOS) and ``labels`` (-100 on BOS and prefix) per text."""
    return tokenize_with_metadata(list(texts), _per_text(prefix, len(texts)), tokenizer, add_eos=False)


def _pad(rows: list[list[int]], value: int, left: bool) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor(
        [[value] * (width - len(r)) + r if left else r + [value] * (width - len(r)) for r in rows],
        dtype=torch.long,
    )


@torch.no_grad()
def generate_with_prefix(
    model,
    tokenizer,
    prompts: Sequence[str],
    prefix: str | Sequence[str | None] | None = None,
    **generate_kwargs,
) -> list[str]:
    """Generate a continuation of each prompt after its metadata prefix; returns only the new text.

    ``prefix`` is a full prefix string (see :func:`url_prefix`) for every prompt, one per prompt, or None.
    ``generate_kwargs`` go to ``model.generate`` (e.g. ``max_new_tokens``, ``do_sample``).
    """
    if not prompts:
        return []
    ids = encode_with_prefix(tokenizer, prompts, prefix)["input_ids"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids, attention_mask, _ = left_pad(ids, pad if pad is not None else 0)
    input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
    generate_kwargs.setdefault("pad_token_id", pad)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)
    return tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)


@torch.no_grad()
def prefixed_text_losses(
    model,
    tokenizer,
    texts: Sequence[str],
    prefix: str | Sequence[str | None] | None = None,
    batch_size: int = 8,
) -> dict[str, list[float]]:
    """Summed loss (nats) of every text's tokens given its prefix, and bits per UTF-8 byte.

    All text tokens are scored, including the first (predicted from the prefix, or from BOS without one), so
    the numbers with and without a prefix cover the same tokens. Returns ``nats``, ``num_tokens``,
    ``num_bytes`` and ``bits_per_byte`` lists, one entry per text.
    """
    enc = encode_with_prefix(tokenizer, texts, prefix)
    out: dict[str, list[float]] = {"nats": [], "num_tokens": [], "num_bytes": [], "bits_per_byte": []}
    device = next(model.parameters()).device
    for start in range(0, len(texts), batch_size):
        ids = enc["input_ids"][start : start + batch_size]
        labels = enc["labels"][start : start + batch_size]
        input_ids = _pad(ids, 0, left=False).to(device)
        attention_mask = _pad([[1] * len(r) for r in ids], 0, left=False).to(device)
        label_t = _pad(labels, -100, left=False).to(device)
        losses, mask = per_token_loss(model, input_ids, attention_mask, labels=label_t)
        for row, text in enumerate(texts[start : start + batch_size]):
            nats = float(losses[row][mask[row]].sum())
            num_bytes = len(text.encode("utf-8"))
            out["nats"].append(nats)
            out["num_tokens"].append(int(mask[row].sum()))
            out["num_bytes"].append(num_bytes)
            out["bits_per_byte"].append(bits_per_byte(nats, max(num_bytes, 1)))
    return out
