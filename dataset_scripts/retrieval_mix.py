"""Documents that make retrieval / induction heads emerge in a tiny base model.

A model of a few million parameters trained on a few million tokens of ordinary text forms weak induction
heads at best; AttentionInfluence (arXiv 2505.07293) needs a base model whose retrieval heads exist. Two kinds
of synthetic documents, built from real corpus text, are mixed into its training data:

- key -> value lookups in the proxy-task format (:mod:`proxy_task`): a JSON object of random keys and corpus
  sentences, three demonstrations and a query, answered by copying the value. Keys are shorter and of varied
  length (``key_lengths``) so the lookup is learnable at this scale; the 32-character keys of the paper are
  included.
- repeated spans: a corpus passage followed by an exact repeat of it (the classic induction-head signal).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .proxy_task import build_proxy_samples

KEY_LENGTHS = (6, 8, 12, 16, 24, 32)


def kv_lookup_documents(
    values: Sequence[str],
    tokenizer,
    num_docs: int,
    context_tokens: int = 500,
    key_lengths: Sequence[int] = KEY_LENGTHS,
    seed: int = 0,
) -> list[str]:
    """``num_docs`` proxy-format lookup documents (prompt + answer), spread over ``key_lengths``."""
    if num_docs < 0:
        raise ValueError(f"num_docs must be >= 0, got {num_docs}")
    docs: list[str] = []
    per_length = -(-num_docs // max(len(key_lengths), 1)) if num_docs else 0
    for i, key_length in enumerate(key_lengths):
        n = min(per_length, num_docs - len(docs))
        if n <= 0:
            break
        samples = build_proxy_samples(
            values,
            tokenizer,
            num_samples=n,
            context_tokens=context_tokens,
            key_length=key_length,
            seed=seed * 1000 + i,
        )
        docs += [s["prompt"] + s["answer"] for s in samples]
    random.Random(seed).shuffle(docs)
    return docs


def repeated_span_documents(
    texts: Sequence[str], num_docs: int, min_chars: int = 200, max_chars: int = 700, seed: int = 0
) -> list[str]:
    """``num_docs`` documents ``passage + "\\n\\n" + passage`` from random passages of ``texts``."""
    candidates = [t for t in texts if len(t) >= min_chars]
    if num_docs and not candidates:
        raise ValueError(f"no text of at least {min_chars} characters to repeat")
    rng = random.Random(seed)
    docs = []
    for _ in range(num_docs):
        text = rng.choice(candidates)
        length = rng.randint(min_chars, min(max_chars, len(text)))
        start = rng.randint(0, len(text) - length)
        passage = text[start : start + length].strip()
        docs.append(passage + "\n\n" + passage)
    return docs
