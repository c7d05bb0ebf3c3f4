"""The multi-domain pretraining corpus (and the low-quality pool) of the demo world.

Each source is read by a :mod:`text_sources` reader, capped at ``max_chars`` characters, and every document
gets ``domain, source, url, title, license``. Exact duplicates (whitespace-normalised text, across all
sources) and documents sharing a word 13-gram with an evaluation item are dropped; the records are kept with
a ``status`` so that the manifest can count them. Per source, ``heldout_fraction`` of the kept documents
(at least one), chosen by a hash of their text, form the ``heldout`` split.

Built with ``Dataset.from_generator``: the result is cached under ``cache_dir`` by the fingerprint of the
generator's arguments (source paths, caps, split fraction), so a re-run reads it back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, Value

from . import text_sources
from .decontamination import NgramIndex

FEATURES = Features(
    {
        name: Value("string")
        for name in ("text", "domain", "source", "url", "title", "license", "split", "status")
    }
)
COLUMNS = ("text", "domain", "source", "url", "title", "license")


@dataclass
class SourceSpec:
    """One text source of the demo world.

    ``origin`` says where it comes from: ``"apt:<package>"``, ``"pypi:<name==version>"`` or ``"stdlib"``;
    ``reader`` names the :mod:`text_sources` function that reads the extracted tree.
    """

    name: str
    domain: str
    license: str
    origin: str
    reader: str
    max_chars: int | None = None
    home: str = ""


def text_hash(text: str) -> str:
    return hashlib.sha1(" ".join(text.split()).encode("utf-8")).hexdigest()


def read_source(spec: dict[str, Any], root: str | None) -> Iterator[dict[str, str]]:
    """Documents of one source, up to ``max_chars`` characters in all."""
    reader = getattr(text_sources, spec["reader"])
    total = 0
    for doc in reader(Path(root)) if root is not None else reader():
        text = doc["text"].strip()
        if not text:
            continue
        yield {**doc, "text": text}
        total += len(text)
        if spec["max_chars"] is not None and total >= spec["max_chars"]:
            return


def corpus_records(
    sources: list[dict[str, Any]],
    roots: list[str | None],
    eval_texts_file: str | None = None,
    heldout_fraction: float = 0.015,
) -> Iterator[dict[str, str]]:
    """Generator of every record (kept or not) of the listed sources; see the module docstring."""
    if not 0 <= heldout_fraction < 0.5:
        raise ValueError(f"heldout_fraction must be in [0, 0.5), got {heldout_fraction}")
    index = None
    if eval_texts_file:
        with open(eval_texts_file, encoding="utf-8") as handle:
            index = NgramIndex(json.loads(line) for line in handle)
    seen: set[str] = set()
    for spec, root in zip(sources, roots):
        kept = []
        for doc in read_source(spec, root):
            record = {
                "text": doc["text"],
                "domain": spec["domain"],
                "source": spec["name"],
                "url": doc["url"],
                "title": doc["title"],
                "license": spec["license"],
                "split": "",
                "status": "kept",
            }
            digest = text_hash(doc["text"])
            if digest in seen:
                yield {**record, "text": "", "status": "duplicate"}
                continue
            seen.add(digest)
            if index is not None and index.contains(doc["text"]):
                yield {**record, "text": "", "status": "contaminated"}
                continue
            kept.append((digest, record))
        n_heldout = max(1, round(heldout_fraction * len(kept))) if len(kept) >= 2 and heldout_fraction else 0
        heldout = {digest for digest, _ in sorted(kept, key=lambda x: x[0])[:n_heldout]}
        for digest, record in kept:
            yield {**record, "split": "heldout" if digest in heldout else "train"}


def build_corpus(
    sources: list[SourceSpec],
    roots: list[str | None],
    cache_dir: str | Path,
    eval_texts_file: str | None = None,
    heldout_fraction: float = 0.015,
) -> Dataset:
    """All records (with ``split`` and ``status``) as one cached ``Dataset``."""
    return Dataset.from_generator(
        corpus_records,
        features=FEATURES,
        cache_dir=str(cache_dir),
        gen_kwargs={
            "sources": [asdict(s) for s in sources],
            "roots": [str(r) if r is not None else None for r in roots],
            "eval_texts_file": eval_texts_file,
            "heldout_fraction": heldout_fraction,
        },
    )


def split_corpus(records: Dataset, with_heldout: bool = True) -> DatasetDict | Dataset:
    """``DatasetDict(train, heldout)`` of the kept records (or one ``Dataset`` when ``with_heldout`` is
    false), with the public columns only."""
    kept = records.filter(lambda s: s == "kept", input_columns="status", desc="keep")
    drop = [c for c in kept.column_names if c not in COLUMNS]
    if not with_heldout:
        return kept.remove_columns(drop)
    return DatasetDict(
        {
            split: kept.filter(lambda s, split=split: s == split, input_columns="split").remove_columns(drop)
            for split in ("train", "heldout")
        }
    )


def corpus_counts(records: Dataset) -> dict[str, dict[str, Any]]:
    """Per source: documents kept (train / heldout), duplicates and contaminated dropped, characters kept."""
    counts: dict[str, dict[str, Any]] = {}
    for row in records.select_columns(["source", "domain", "split", "status", "text"]).iter(batch_size=2000):
        for source, domain, split, status, text in zip(
            row["source"], row["domain"], row["split"], row["status"], row["text"]
        ):
            entry = counts.setdefault(
                source,
                {"domain": domain, "train": 0, "heldout": 0, "duplicate": 0, "contaminated": 0, "chars": 0},
            )
            if status == "kept":
                entry[split] += 1
                entry["chars"] += len(text)
            else:
                entry[status] += 1
    return counts
