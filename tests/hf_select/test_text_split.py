"""``greedy_pieces`` against straightforward independent cuttings by lines and by paragraphs."""

from __future__ import annotations

import random
import re

import pytest

from hf_select.text_split import greedy_pieces


def _by_lines(text: str, max_chars: int) -> list[str]:
    pieces, current = [], ""
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:max_chars])
            line = line[max_chars:]
        if len(current) + len(line) > max_chars:
            pieces.append(current)
            current = ""
        current += line
    pieces.append(current)
    return [p for p in pieces if p.strip()]


def _by_paragraphs(text: str, max_chars: int) -> list[str]:
    out, current = [], []
    for para in (p.strip("\n") for p in re.split(r"\n\s*\n", text)):
        if not para.strip():
            continue
        chunks = [para[i : i + max_chars] for i in range(0, len(para), max_chars)]
        for chunk in chunks[:-1]:
            if current:
                out.append("\n\n".join(current))
                current = []
            out.append(chunk)
        last = chunks[-1]
        if current and len("\n\n".join([*current, last])) > max_chars:
            out.append("\n\n".join(current))
            current = []
        current.append(last)
    if current:
        out.append("\n\n".join(current))
    return out


def _text(rng: random.Random) -> str:
    words = ["alpha", "be", "gamma-delta", "x" * 37, "\n", "\n\n", "\n \n", "  "]
    return "".join(rng.choice(words) + rng.choice([" ", ""]) for _ in range(rng.randint(0, 120)))


@pytest.mark.parametrize("seed", range(40))
def test_greedy_pieces_equal_independent_cuttings(seed):
    rng = random.Random(seed)
    text, limit = _text(rng), rng.choice([1, 7, 30, 64, 500])
    lines = [p for p in greedy_pieces(text.splitlines(keepends=True), limit) if p.strip()]
    assert lines == _by_lines(text, limit) and all(len(p) <= limit for p in lines)
    paragraphs = [p.strip("\n") for p in re.split(r"\n\s*\n", text)]
    assert greedy_pieces([p for p in paragraphs if p.strip()], limit, "\n\n") == _by_paragraphs(text, limit)


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="max_chars must be positive"):
        greedy_pieces(["a"], 0)
