import json

import pytest

from hf_select.dataset_scripts.pretrain_corpus import (
    COLUMNS,
    SourceSpec,
    build_corpus,
    corpus_counts,
    corpus_records,
    split_corpus,
)

from .fixtures import write_dictd

EVAL_QUESTION = "which gas do plants absorb from the air during photosynthesis in bright sunlight today"


@pytest.fixture
def world(tmp_path):
    entries = [(f"term{i}", f"Definition number {i} of a computing term, long enough.") for i in range(120)]
    entries.append(("dup", "Definition number 5 of a computing term, long enough."))  # exact duplicate body
    entries.append(("leak", f"Trivia: {EVAL_QUESTION} and more."))
    write_dictd(tmp_path / "foldoc", "foldoc", entries)
    write_dictd(tmp_path / "jargon", "jargon", [(f"j{i}", f"Jargon entry {i} text.") for i in range(3)])
    texts = tmp_path / "eval_texts.jsonl"
    texts.write_text(json.dumps(EVAL_QUESTION) + "\n")
    specs = [
        SourceSpec("foldoc", "prose", "GFDL-1.1+", "apt:dict-foldoc", "foldoc_docs"),
        SourceSpec("jargon", "prose", "public-domain", "apt:dict-jargon", "jargon_docs"),
    ]
    return specs, [str(tmp_path / "foldoc"), str(tmp_path / "jargon")], texts


def test_dedup_decontamination_and_heldout(world, tmp_path):
    specs, roots, texts = world
    records = build_corpus(specs, roots, tmp_path / "cache", str(texts), heldout_fraction=0.02)
    counts = corpus_counts(records)
    # dedup is on the whole entry text, headword line included: "dup" differs from "term5" and stays
    assert counts["foldoc"]["contaminated"] == 1
    assert counts["foldoc"]["train"] + counts["foldoc"]["heldout"] == 121
    assert counts["foldoc"]["heldout"] == 2  # round(0.02 * 121)
    assert counts["jargon"]["heldout"] == 1  # at least one per source
    data = split_corpus(records)
    assert set(data) == {"train", "heldout"} and tuple(data["train"].column_names) == COLUMNS
    assert not set(data["train"]["text"]) & set(data["heldout"]["text"])
    assert all(EVAL_QUESTION not in t.lower() for t in data["train"]["text"])
    assert set(data["train"]["license"]) == {"GFDL-1.1+", "public-domain"}


def test_exact_duplicates_across_sources_removed(tmp_path):
    for name in ("a", "b"):
        write_dictd(tmp_path / name, "foldoc", [("same", "Identical body text here.")])
    specs = [SourceSpec(n, "prose", "x", "apt:x", "foldoc_docs") for n in ("a", "b")]
    rows = list(corpus_records([s.__dict__ for s in specs], [str(tmp_path / "a"), str(tmp_path / "b")]))
    assert [r["status"] for r in rows] == ["kept", "duplicate"]


def test_cap_and_bad_fraction(tmp_path):
    write_dictd(tmp_path / "f", "foldoc", [(f"t{i}", "x" * 100) for i in range(10)])
    spec = SourceSpec("f", "prose", "x", "apt:x", "foldoc_docs", max_chars=250).__dict__
    rows = list(corpus_records([spec], [str(tmp_path / "f")], heldout_fraction=0.0))
    assert len(rows) == 3  # ~107 characters each: the third one reaches the 250-character cap
    with pytest.raises(ValueError, match="heldout_fraction"):
        list(corpus_records([spec], [str(tmp_path / "f")], heldout_fraction=0.7))
