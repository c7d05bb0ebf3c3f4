"""Filters run before AttentionInfluence scoring: exact deduplication and datatrove's Gopher filters.

The paper warns that duplicated and repetitive text inflates the score (copy heads light up on text that repeats
itself) and deduplicates its corpus first (arXiv 2505.07293, sections 3-4). ``prefilter`` (a field of
:class:`~hf_select.attention_influence.AttentionInfluenceConfig`) chooses what runs:

* ``none`` -- nothing (the default);
* ``repetition`` -- exact deduplication (the first occurrence of a text is kept) then datatrove's
  ``GopherRepetitionFilter`` (duplicate lines / paragraphs / n-grams, Rae et al. 2021, Table A1);
* ``gopher`` -- the same, then datatrove's ``GopherQualityFilter`` (word counts, mean word length, symbol and
  alphabetic-word ratios, stop words). It is tuned for English web prose: on code and math it drops most
  documents (their "words" are symbols), so ``repetition`` is the option for such domains.

Thresholds are datatrove's defaults; ``prefilter_options`` overrides any of them by the filters' own argument
names (e.g. ``{"dup_line_frac": 0.5, "min_doc_words": 20}``). A dropped document is never lost: it keeps its
row, gets a null ``ai_score`` and the reason in ``ai_filter_reason`` (``duplicate``, ``repetition:<datatrove
reason>`` or ``quality:<datatrove reason>``; the empty string for kept documents, so the column keeps one
string type in Arrow and parquet files). The same function decides on both the
``Dataset.map`` path (:func:`prefilter_dataset`) and the datatrove path
(:class:`hf_select.datatrove.PrefilterFlagger`), so both drop the same documents (the datatrove path
deduplicates within a task: use one task, or datatrove's own ``ExactDedup`` stages, for a corpus-wide exact
deduplication there).

Needs datatrove and its English word tokenizer: ``pip install 'hf-select[datatrove]'``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from transformers.utils import logging

logger = logging.get_logger(__name__)

PREFILTERS = ("none", "repetition", "gopher")
REASON_COLUMN = "ai_filter_reason"
DUPLICATE = "duplicate"
KEPT = ""


def parse_prefilter_options(options: str | dict | None) -> dict[str, Any]:
    """``prefilter_options`` as a dict: a mapping, a JSON object string, or None / empty."""
    if options is None or options == "":
        return {}
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except json.JSONDecodeError as exc:
            raise ValueError(f"prefilter_options must be a JSON object, got {options!r} ({exc.msg})") from None
    if not isinstance(options, dict):
        raise ValueError(f"prefilter_options must be a mapping of filter arguments, got {options!r}")
    return dict(options)


def gopher_filters(prefilter: str, options: str | dict | None = None) -> list[tuple[str, Any]]:
    """``(label, datatrove filter)`` pairs of ``prefilter`` (``none``: empty), thresholds at datatrove's
    defaults except those named in ``options``; an option no filter of ``prefilter`` takes is an error."""
    if prefilter not in PREFILTERS:
        raise ValueError(f"prefilter must be one of {PREFILTERS}, got {prefilter!r}")
    options = parse_prefilter_options(options)
    if prefilter == "none":
        if options:
            raise ValueError("prefilter_options given but prefilter is 'none'")
        return []
    try:
        from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    except ImportError as error:
        raise ImportError(
            f"prefilter {prefilter!r} needs datatrove: pip install 'hf-select[datatrove]'"
        ) from error
    classes = [("repetition", GopherRepetitionFilter)]
    if prefilter == "gopher":
        classes.append(("quality", GopherQualityFilter))
    filters, used = [], set()
    for label, cls in classes:
        names = set(inspect.signature(cls.__init__).parameters) - {"self", "exclusion_writer"}
        kwargs = {k: v for k, v in options.items() if k in names}
        kwargs = {k: tuple(tuple(x) for x in v) if k in ("top_n_grams", "dup_n_grams") else v for k, v in kwargs.items()}
        used |= set(kwargs)
        filters.append((label, cls(**kwargs)))
    unknown = sorted(set(options) - used)
    if unknown:
        raise ValueError(f"prefilter_options {unknown} are not arguments of the {prefilter!r} filters")
    return filters


def text_hash(text: str) -> str:
    """Exact-duplicate key of a text (SHA-1 of its UTF-8 bytes)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def filter_reason(text: str, filters: Sequence[tuple[str, Any]], seen: set[str] | None = None) -> str:
    """Why ``text`` is dropped (``duplicate``, ``<label>:<datatrove reason>``), or ``""`` when it is kept.

    ``seen`` holds the hashes of the texts met so far (updated here): a text already in it is a duplicate; the
    first occurrence is kept. The filters run in order and the first that drops the text names the reason."""
    from datatrove.data import Document

    if seen is not None:
        key = text_hash(text)
        if key in seen:
            return DUPLICATE
        seen.add(key)
    doc = Document(text=text, id="")
    for label, flt in filters:
        result = flt.filter(doc)
        kept, reason = result if isinstance(result, tuple) else (result, None)
        if not kept:
            return f"{label}:{reason or 'dropped'}"
    return KEPT


def filter_reasons(texts: Iterable[str], prefilter: str, options: str | dict | None = None) -> list[str]:
    """:func:`filter_reason` of every text in order, with exact deduplication over all of them."""
    filters = gopher_filters(prefilter, options)
    if prefilter == "none":
        return [KEPT for _ in texts]
    seen: set[str] = set()
    return [filter_reason(str(t), filters, seen) for t in texts]


def log_dropped(reasons: Sequence[str], what: str = "documents") -> dict[str, int]:
    """Log how many of ``reasons`` are drops, by reason; returns the counts."""
    counts = Counter(r for r in reasons if r)
    if counts:
        logger.warning(
            f"prefilter: {sum(counts.values())} of {len(reasons)} {what} dropped before scoring (null ai_score): "
            + ", ".join(f"{r} {n}" for r, n in counts.most_common())
        )
    return dict(counts)


def prefilter_dataset(dataset, prefilter: str, options: str | dict | None = None, text_column: str = "text"):
    """``dataset`` with the :data:`REASON_COLUMN` column (``""``: kept) of :func:`filter_reasons`. The
    deduplication keeps the first occurrence in row order, so run it on the whole dataset before sharding."""
    reasons = filter_reasons(dataset[text_column], prefilter, options)
    log_dropped(reasons)
    if REASON_COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(REASON_COLUMN)
    from datasets import Value

    return dataset.add_column(REASON_COLUMN, reasons, feature=Value("string"))
