"""Documents that make retrieval / induction heads emerge in a tiny base model.

A model of a few million parameters trained on a few million tokens of ordinary text forms weak induction
heads at best; AttentionInfluence (arXiv 2505.07293) needs a base model whose retrieval heads exist. Two kinds
of synthetic documents, built from real corpus text, are mixed into its training data:

- key -> value lookups in the proxy-task format (:mod:`proxy_task`): a JSON object of random keys and corpus
  sentences, three demonstrations and a query, answered by copying the value. Keys are shorter and of varied
  length (``key_lengths``) so the lookup is learnable at this scale; the 32-character keys of the paper are
  included. With ``queries > 1`` a document is one JSON object followed by many key / answer
  blocks (every pair queried, in shuffled rounds) until the token budget is spent: after the first few lines,
  each answer is a retrieval exercise, so far more of the training tokens teach the lookup.
- repeated spans: a corpus passage followed by an exact repeat of it (the classic induction-head signal).

What made the heads emerge on 2 CPU cores was a curriculum at the token level (measured, see
``hf_select/demo/stage_base_model.py``): :func:`copy_rows` first -- short corpus spans repeated after a stretch of
corpus text whose length grows phase by phase (induction forms fast when the copy distance is short, and must then
be stretched to the distances of the proxy context) -- then :func:`answer_labelled_rows` of multi-query lookups
in which only the answers carry a loss. In both, the loss sits where copying is the only way to be right (and on
the natural filler), so the gradient is not drowned by the unpredictable first occurrence of random material.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .proxy_task import ANSWER_LINE, INSTRUCTION, build_proxy_samples, keyed_pairs, query_block, render_sample

KEY_LENGTHS = (6, 8, 12, 16, 24, 32)


def kv_lookup_documents(
    values: Sequence[str],
    tokenizer,
    num_docs: int,
    context_tokens: int = 500,
    key_lengths: Sequence[int] = KEY_LENGTHS,
    seed: int = 0,
    queries: int = 1,
    rounds: int | None = None,
) -> list[str]:
    """``num_docs`` proxy-format lookup documents (prompt + answer), spread over ``key_lengths``.

    ``queries == 1``: exactly the proxy-task samples (three demonstrations, one query). ``queries > 1``:
    multi-query documents (:func:`multi_query_document`) of at most ``context_tokens`` tokens with up to
    ``queries`` key / answer lines.
    """
    if num_docs < 0:
        raise ValueError(f"num_docs must be >= 0, got {num_docs}")
    if queries > 1:
        rng = random.Random(seed)
        pool = list(values)
        docs = [
            multi_query_document(
                pool, tokenizer, context_tokens, key_lengths[i % len(key_lengths)], rng, queries, rounds
            )
            for i in range(num_docs)
        ]
        rng.shuffle(docs)
        return docs
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


def multi_query_document(
    values: Sequence[str],
    tokenizer,
    context_tokens: int,
    key_length: int,
    rng: random.Random,
    max_queries: int = 64,
    rounds: int | None = None,
) -> str:
    """One JSON object of ``k`` pairs (``k`` uniform between 4 and what fills half the budget), then key /
    answer lines (rounds of all pairs in shuffled order) while the document fits in ``context_tokens``.

    ``rounds=1`` queries every key at most once, so that each answer must be looked up in the object (from the
    second round on, an answer can also be copied from the earlier answer line of the same key -- the proxy task
    never allows that shortcut); ``None``: as many rounds as fit.
    """

    def n_tokens(text: str) -> int:
        return len(tokenizer(text).input_ids)

    pool = rng.sample(list(values), k=min(len(values), 64))
    if len(pool) < 4:
        raise ValueError(f"need at least 4 distinct values, got {len(values)}")
    pairs = keyed_pairs(
        pool, rng, key_length, 4, lambda p: n_tokens(render_sample(p, [], 0)[0]) > context_tokens // 2
    )
    pairs = pairs[: rng.randint(4, max(4, len(pairs)))]
    context = render_sample(pairs, [], 0)[0].rsplit("key: ", 1)[0]
    assert context.startswith(INSTRUCTION)
    budget = context_tokens - n_tokens(context)
    lines: list[str] = []
    done_rounds = 0
    while len(lines) < max_queries and (rounds is None or done_rounds < rounds):
        done_rounds += 1
        order = list(range(len(pairs)))
        rng.shuffle(order)
        for i in order:
            line = query_block(*pairs[i])
            cost = n_tokens(line)
            if cost > budget or len(lines) >= max_queries:
                return context + "".join(lines).rstrip("\n")
            budget -= cost
            lines.append(line)
    return context + "".join(lines).rstrip("\n")


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


IGNORE_INDEX = -100


def copy_rows(
    stream: Sequence[int],
    num_rows: int,
    seq_length: int,
    max_distance: int,
    span: tuple[int, int] = (4, 12),
    seed: int = 0,
) -> list[dict[str, list[int]]]:
    """Packed training rows of ``span + filler + span`` pieces cut from a corpus token ``stream``.

    Each piece takes ``n`` (uniform in ``span``) consecutive corpus tokens, the next ``f`` (uniform in
    ``[0, max_distance]``) tokens as filler, then the ``n`` tokens again. Labels: the filler (ordinary language
    modelling) and the repeat from its second token on (the first is not predictable); the first occurrence is
    unlabelled. Rows hold ``input_ids``, ``labels`` and ``position_ids`` (one segment of ``seq_length``).
    """
    low, high = span
    if num_rows < 0 or not 1 <= low <= high or max_distance < 0:
        raise ValueError(
            f"bad copy-row settings: num_rows={num_rows}, span={span}, max_distance={max_distance}"
        )
    if len(stream) < high + max_distance + 1:
        raise ValueError(f"the token stream has {len(stream)} tokens, fewer than one piece needs")
    rng = random.Random(seed)
    rows = []
    for _ in range(num_rows):
        ids: list[int] = []
        labels: list[int] = []
        while len(ids) < seq_length:
            n, f = rng.randint(low, high), rng.randint(0, max_distance)
            start = rng.randrange(len(stream) - n - f)
            piece, filler = list(stream[start : start + n]), list(stream[start + n : start + n + f])
            ids += piece + filler + piece
            labels += [IGNORE_INDEX] * n + filler + [IGNORE_INDEX] + piece[1:]
        rows.append(
            {
                "input_ids": ids[:seq_length],
                "labels": labels[:seq_length],
                "position_ids": list(range(seq_length)),
            }
        )
    return rows


def answer_labelled_row(document: str, tokenizer, max_length: int) -> dict[str, list[int]]:
    """One lookup document (:func:`multi_query_document`) as a training row whose labels are its answers only.

    BOS + the document's tokens (one tokenisation, so the tokens are those the proxy task sees); a token is
    labelled when its characters lie inside an answer's value (the line after ``answer:``).
    Truncated to ``max_length``.
    """
    enc = tokenizer(document, return_offsets_mapping=True, add_special_tokens=False)
    spans = [m.span(1) for m in ANSWER_LINE.finditer(document)]
    labels = [
        token if end > start and any(a <= start and end <= b for a, b in spans) else IGNORE_INDEX
        for token, (start, end) in zip(enc.input_ids, enc.offset_mapping)
    ]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids = (bos + enc.input_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(bos) + labels)[:max_length]
    return {"input_ids": ids, "labels": labels, "position_ids": list(range(len(ids)))}
