"""The synthetic key-value retrieval task used to detect retrieval heads (AttentionInfluence, arXiv 2505.07293,
section 3.2 / appendix A, after Wu et al. 2024).

Each sample: an instruction, a JSON object of ``k`` pairs (key = random alphanumeric string, value = a
natural-language sentence), ``num_demos`` in-context demonstrations (key -> value pairs of the same object,
never the query), the query key and ``"answer:"``. ``k`` is the largest number of pairs for which prompt +
answer fit in ``context_tokens``. The query value occurs exactly once in the context; the query pair's
position in the object is uniform at random; keys are unique. Seeded and deterministic.

Rendering (the papers fix the content, not the layout): a demonstration is the line ``"<key>": "<value>"``
written as in the object, and the query is ``"<key>": "`` -- so the answer is ``<value>"``, the very tokens that
follow the key in the object (the closing quote included: BPE merges a value's last character with it, e.g.
``."``). Then a head that copies from the context can produce every answer token, and the retrieval score
(token produced == token attended) can count every one.

Measured on SmolLM2-135M-Instruct (20 samples each, 8-character keys, values <= 16 tokens): with the layout of
the paper's prompt (``key: "<key>"\nanswer:\n<value>``) the model found the key in 10-25% of the samples at
300-400 tokens, with the chat template 0%; with this layout the first answer token (the key lookup) was right in
85% / 80% / 60% of the samples at 300 / 500 / 800 tokens and the whole answer in 65% / 55% / 40%. 32-character
keys (the paper's) split into many rare tokens and halve the lookup rate at this size.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Sequence
from typing import Any

from datasets import Dataset

INSTRUCTION = (
    "Extract the value corresponding to the given key from the JSON object below. Output only the value.\n\n"
)
_ALPHABET = string.ascii_letters + string.digits


def random_key(rng: random.Random, length: int = 32) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(length))


def keyed_pairs(
    values: Sequence[str], rng: random.Random, key_length: int, min_pairs: int, too_long
) -> list[tuple[str, str]]:
    """``(unique random key, value)`` pairs in the order of ``values``, stopping before the first pair that makes
    ``too_long(pairs)`` true once more than ``min_pairs`` pairs are held."""
    if key_length < 1:
        raise ValueError(f"key_length must be >= 1, got {key_length}")
    keys: set[str] = set()
    pairs: list[tuple[str, str]] = []
    distinct = len(_ALPHABET) ** min(key_length, 8)
    for value in values:
        if len(keys) >= distinct:  # every key of this length is taken: no more pairs
            break
        key = random_key(rng, key_length)
        while key in keys:
            key = random_key(rng, key_length)
        keys.add(key)
        pairs.append((key, value))
        if len(pairs) > min_pairs and too_long(pairs):
            pairs.pop()
            break
    return pairs


def query_block(key: str, value: str | None = None) -> str:
    """A demonstration ``"<key>": "<value>"\n``, or the query (``value=None``), which ends at the value's
    opening quote."""
    block = json.dumps(key) + ': "'
    return block if value is None else block + value + '"\n'


def render_sample(
    pairs: list[tuple[str, str]], demos: list[int], query: int
) -> tuple[str, str, tuple[int, int]]:
    """Prompt text, answer text (the value and its closing quote) and the character span of the query value in
    the prompt."""
    head = INSTRUCTION + "{"
    spans = []
    parts = []
    offset = len(head)
    for i, (key, value) in enumerate(pairs):
        prefix = ("" if i == 0 else ", ") + json.dumps(key) + ': "'
        parts.append(prefix + value + '"')
        spans.append((offset + len(prefix), offset + len(prefix) + len(value)))
        offset += len(parts[-1])
    context = head + "".join(parts) + "}\n\n"
    demo_text = "".join(query_block(*pairs[i]) for i in demos)
    prompt = context + demo_text + query_block(pairs[query][0])
    return prompt, pairs[query][1] + '"', spans[query]


def clean_values(
    sentences: Sequence[str], tokenizer, max_value_tokens: int = 30, min_chars: int = 20
) -> list[str]:
    """Distinct one-line sentences without quotes or backslashes (JSON-safe as written) of at most
    ``max_value_tokens`` tokens."""
    seen, values = set(), []
    for sentence in sentences:
        text = " ".join(sentence.split())
        if len(text) < min_chars or '"' in text or "\\" in text or text in seen:
            continue
        if len(tokenizer(text, add_special_tokens=False).input_ids) > max_value_tokens:
            continue
        seen.add(text)
        values.append(text)
    return values


def build_proxy_samples(
    values: Sequence[str],
    tokenizer,
    num_samples: int = 800,
    context_tokens: int = 4096,
    num_demos: int = 3,
    key_length: int = 32,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Generate ``num_samples`` retrieval samples whose prompt + answer fit in ``context_tokens`` tokens.

    ``values`` are candidate value sentences (see :func:`clean_values`). Returns dicts with ``prompt``,
    ``answer`` (the value, see the module docstring for the layout), ``value_span`` (character span of the query value in ``prompt``),
    ``num_pairs`` and ``query_index``.
    """
    if len(values) < num_demos + 1:
        raise ValueError(f"need at least {num_demos + 1} distinct values, got {len(values)}")
    if key_length < 1:
        raise ValueError(f"key_length must be >= 1, got {key_length}")
    rng = random.Random(seed)
    samples = []

    def n_tokens(text: str) -> int:
        return len(tokenizer(text).input_ids)

    for _ in range(num_samples):
        pool = rng.sample(list(values), k=min(len(values), 4096))
        pairs = keyed_pairs(
            pool, rng, key_length, num_demos, lambda p: _too_long(p, num_demos, n_tokens, context_tokens)
        )
        if len(pairs) < num_demos + 1:
            raise ValueError(
                f"context_tokens={context_tokens} is too small for {num_demos} demos and a query"
            )
        query = rng.randrange(len(pairs))
        demos = rng.sample([i for i in range(len(pairs)) if i != query], k=num_demos)
        prompt, answer, span = render_sample(pairs, demos, query)
        samples.append(
            {
                "prompt": prompt,
                "answer": answer,
                "value_span": list(span),
                "num_pairs": len(pairs),
                "query_index": query,
            }
        )
    return samples


def _too_long(pairs, num_demos, n_tokens, budget) -> bool:
    # The longest demos give the worst case, so the chosen k fits whatever demos are drawn.
    by_length = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][1]))
    query, demos = by_length[0], by_length[1 : num_demos + 1]
    prompt, answer, _ = render_sample(pairs, demos, query)
    return n_tokens(prompt + answer) > budget


def proxy_dataset(samples: list[dict[str, Any]]) -> Dataset:
    """The samples as a ``datasets.Dataset``."""
    return Dataset.from_list(samples)
