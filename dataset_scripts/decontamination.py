"""Keep evaluation items out of the training data: word n-gram overlap, as in GPT-3 / OLMo decontamination.

A training document is contaminated when it shares at least one word ``n``-gram (lower-cased ``\\w+`` words,
default ``n = 13``, the GPT-3 choice) with any evaluation text. Contaminated documents are dropped whole.
Eval texts shorter than ``n`` words are matched as a whole (their full word sequence must occur).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> Iterable[tuple[str, ...]]:
    if len(tokens) < n:
        return [tuple(tokens)] if tokens else []
    return (tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


class NgramIndex:
    """Hashes of the word ``n``-grams of the evaluation texts; ``contains(doc)`` tells whether ``doc`` overlaps.

    Args:
        texts: evaluation texts (questions, gold answers, choices...).
        n: n-gram length in words.
        min_words: eval texts with fewer words are ignored (too generic to signal contamination).
    """

    def __init__(self, texts: Iterable[str], n: int = 13, min_words: int = 8):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.full: set[int] = set()
        self.short: dict[int, set[int]] = {}  # length -> hashes of whole short texts
        for text in texts:
            tokens = words(text)
            if len(tokens) < min_words:
                continue
            if len(tokens) >= n:
                self.full.update(hash(g) for g in ngrams(tokens, n))
            else:
                self.short.setdefault(len(tokens), set()).add(hash(tuple(tokens)))

    def __len__(self) -> int:
        return len(self.full) + sum(len(v) for v in self.short.values())

    def contains(self, text: str) -> bool:
        tokens = words(text)
        if any(hash(g) in self.full for g in ngrams(tokens, self.n)):
            return True
        for length, hashes in self.short.items():
            if any(hash(tuple(tokens[i : i + length])) in hashes for i in range(len(tokens) - length + 1)):
                return True
        return False
