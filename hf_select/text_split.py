"""Cutting text into pieces of bounded length at natural boundaries (lines, paragraphs)."""

from __future__ import annotations

from collections.abc import Iterable


def greedy_pieces(units: Iterable[str], max_chars: int, joiner: str = "") -> list[str]:
    """Join consecutive ``units`` (lines, paragraphs) with ``joiner`` into pieces of at most ``max_chars``
    characters, starting a new piece when the next unit would not fit; a unit longer than ``max_chars`` is cut
    into ``max_chars``-character pieces of its own. No character of a unit is lost or reordered."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    pieces, current = [], ""
    for unit in units:
        while len(unit) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(unit[:max_chars])
            unit = unit[max_chars:]
        if current and len(current) + len(joiner) + len(unit) > max_chars:
            pieces.append(current)
            current = ""
        current = f"{current}{joiner}{unit}" if current else unit
    if current:
        pieces.append(current)
    return pieces
