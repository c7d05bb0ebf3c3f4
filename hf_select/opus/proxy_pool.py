"""OPUS "Bench-Proxy" pool: corpus documents most similar to benchmark items (arXiv 2602.05400, section 3).

The proxy set OPUS scores candidates against is built from the pretraining corpus itself: the documents
nearest to items of the target benchmarks' train/dev splits. Evaluated (test) items are never used:
:func:`benchmark_proxy_texts` refuses a task's evaluated split.

Similarity is the cosine between document embeddings when an embedding function is given (for instance
``sentence_transformers.SentenceTransformer(path).encode`` on a locally installed model), else a lexical
fallback that needs nothing: hashed word uni+bigram TF-IDF vectors (stable crc32 hashing, sublinear tf,
L2-normalised). A document's score is its best cosine over all benchmark items.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)

_WORD = re.compile(r"\w+", re.UNICODE)
_PROXY_SPLITS = ("train", "dev", "validation", "val")


def _features(text: str, num_features: int) -> dict[int, float]:
    words = _WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    counts: dict[int, float] = {}
    for gram in grams:
        index = zlib.crc32(gram.encode()) % num_features
        counts[index] = counts.get(index, 0.0) + 1.0
    return counts


def _tfidf_matrix(bags: list[dict[int, float]], idf: torch.Tensor, num_features: int) -> torch.Tensor:
    out = torch.zeros(len(bags), num_features)
    for row, bag in enumerate(bags):
        if bag:
            idx = torch.tensor(list(bag))
            out[row, idx] = (1 + torch.tensor(list(bag.values())).log()) * idf[idx]
    return torch.nn.functional.normalize(out, dim=1)


def lexical_similarity(
    corpus: Sequence[str], targets: Sequence[str], num_features: int = 2**14, chunk_size: int = 512
) -> np.ndarray:
    """Best cosine of each corpus text to any target text, with hashed uni+bigram TF-IDF vectors."""
    corpus_bags = [_features(t, num_features) for t in corpus]
    target_bags = [_features(t, num_features) for t in targets]
    df = torch.zeros(num_features)
    for bag in corpus_bags + target_bags:
        df[list(bag)] += 1
    n_docs = len(corpus_bags) + len(target_bags)
    idf = torch.log((1 + n_docs) / (1 + df)) + 1
    best = np.full(len(corpus), -1.0, dtype=np.float32)
    for t0 in range(0, len(target_bags), chunk_size):
        tmat = _tfidf_matrix(target_bags[t0 : t0 + chunk_size], idf, num_features)
        for c0 in range(0, len(corpus_bags), chunk_size):
            cmat = _tfidf_matrix(corpus_bags[c0 : c0 + chunk_size], idf, num_features)
            sims = (cmat @ tmat.t()).max(dim=1).values.numpy()
            best[c0 : c0 + len(sims)] = np.maximum(best[c0 : c0 + len(sims)], sims)
    return best


def embedding_similarity(
    corpus: Sequence[str], targets: Sequence[str], embed_fn: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """Best cosine of each corpus text to any target, with embeddings from ``embed_fn(texts) -> [n, d]``."""
    c = torch.nn.functional.normalize(
        torch.as_tensor(np.asarray(embed_fn(list(corpus))), dtype=torch.float32), dim=1
    )
    t = torch.nn.functional.normalize(
        torch.as_tensor(np.asarray(embed_fn(list(targets))), dtype=torch.float32), dim=1
    )
    return torch.cat([(c[i : i + 1024] @ t.t()).max(1).values for i in range(0, len(c), 1024)]).numpy()


def build_proxy_pool(
    corpus,
    targets: Sequence[str],
    size: int | float = 0.05,
    text_column: str = "text",
    embed_fn: Callable[[list[str]], np.ndarray] | None = None,
    num_features: int = 2**14,
):
    """The ``size`` corpus documents most similar to the benchmark items ``targets``.

    Args:
        corpus: a ``datasets.Dataset`` (with ``text_column``) or a list of texts.
        targets: benchmark items from train/dev splits (e.g. :func:`benchmark_proxy_texts`); never test items.
        size: number of documents, or a fraction of the corpus when < 1.
        embed_fn: texts -> embeddings; without it the lexical fallback is used.
        num_features: hashed feature count of the lexical fallback.

    Returns:
        For a Dataset: the selected rows with a ``proxy_similarity`` column, most similar first. For a list:
        ``(indices, similarities)`` as numpy arrays.
    """
    if len(targets) == 0:
        raise ValueError("build_proxy_pool needs at least one benchmark item (targets is empty)")
    texts = list(corpus[text_column]) if hasattr(corpus, "column_names") else list(corpus)
    if not texts:
        raise ValueError("build_proxy_pool: the corpus is empty")
    count = int(size) if size >= 1 else max(1, math.ceil(size * len(texts)))
    count = min(count, len(texts))
    if embed_fn is not None:
        sims = embedding_similarity(texts, targets, embed_fn)
    else:
        logger.info("proxy pool: no embedding model given, using hashed uni+bigram TF-IDF similarity")
        sims = lexical_similarity(texts, targets, num_features)
    order = np.argsort(-sims, kind="stable")[:count]
    if hasattr(corpus, "column_names"):
        return corpus.select(order.tolist()).add_column("proxy_similarity", sims[order].tolist())
    return order, sims[order]


def _record_text(record: dict, task: dict) -> str:
    query = str(record.get(task.get("query_field", "query"), "") or "")
    delimiter = task.get("target_delimiter", " ")
    kind = task.get("type", "multiple_choice")
    if kind == "multiple_choice":
        choices = record.get(task.get("choices_field", "choices")) or []
        gold = record.get(task.get("gold_field", "gold"))
        answer = choices[gold] if isinstance(gold, int) and 0 <= gold < len(choices) else ""
        return f"{query}{delimiter}{answer}".strip()
    if kind == "perplexity":
        return str(record.get(task.get("text_field", "text"), ""))
    return f"{query}{delimiter}{record.get(task.get('gold_field', 'gold'), '')}".strip()


def _split_files(files: dict, task_path: Path, split: str) -> list[Path]:
    names = files.get(split, [])
    return [(task_path.parent / n).resolve() for n in (names if isinstance(names, list) else [names])]


def benchmark_proxy_texts(
    task_files: Sequence[str | Path], splits: Sequence[str] = _PROXY_SPLITS
) -> list[str]:
    """Query + gold answer texts of the train/dev items of harness tasks (``eval/TASK_FORMAT.md``).

    A task's evaluated split (its ``split`` key, default ``test``) is never read, even if listed in
    ``splits``. Split names are validated: a name outside ``train/dev/validation/val`` (other than the
    evaluated split, which is skipped) and a train/dev entry whose file is the evaluated split's file (e.g.
    ``dev: task.test.jsonl``) raise ``ValueError``. Tasks without a train/dev split contribute nothing (logged).
    """
    import yaml

    texts: list[str] = []
    for path in map(Path, task_files):
        task = (
            yaml.safe_load(path.read_text())
            if path.suffix in (".yaml", ".yml")
            else json.loads(path.read_text())
        )
        name = task.get("name", path.stem)
        evaluated = task.get("split", "test")
        files = task.get("data_files", {})
        unknown = [s for s in splits if s not in _PROXY_SPLITS and s != evaluated]
        if unknown:
            raise ValueError(
                f"proxy pool: split(s) {unknown} of task {name} are not train/dev splits {_PROXY_SPLITS}"
            )

        evaluated_files = set(_split_files(files, path, evaluated))
        usable = [s for s in splits if s in files and s != evaluated]
        if not usable:
            logger.info(f"proxy pool: task {name} has no train/dev split; skipped")
        for split in usable:
            for file in _split_files(files, path, split):
                if file in evaluated_files or any(
                    e.exists() and file.exists() and file.samefile(e) for e in evaluated_files
                ):
                    raise ValueError(
                        f"proxy pool: the {split!r} split of task {name} points at {file}, the file of its "
                        f"evaluated split {evaluated!r}: the proxy set would contain test items"
                    )
                with open(file) as f:
                    texts += [_record_text(json.loads(line), task) for line in f if line.strip()]
    return [t for t in texts if t]
