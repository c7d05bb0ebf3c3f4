"""Publishing scored datasets and trained models in the layout people know from FineWeb-Edu.

A scored dataset becomes parquet shards plus a dataset card:

- a float ``score`` column and an integer ``int_score`` column (FineWeb-Edu: the rounded score; for unbounded
  scores such as AttentionInfluence's, ``int_score_bins=k`` stores the k-quantile bin ``0..k-1`` instead);
- config ``default`` with every row (``data/<split>-0000i-of-0000n.parquet``) and one config per threshold
  ``int_score_ge_<t>`` with the rows whose ``int_score >= t`` (``int_score_ge_<t>/<split>-*.parquet``);
- ``README.md`` whose YAML ``configs`` make ``load_dataset(repo_or_folder, config)`` work, and whose body
  records what scored the data (method, model id and revision, heads or reference model, parameters), the
  thresholds with their row counts, and a score histogram (``score_histogram.png``).

The same files are written to a local folder (``local_dir=``) or sent to the Hub in ONE commit
(``create_commit``, retried with back-off). Republishing replaces the data: a local folder loses its old
parquet shards before the new ones are written, and a Hub commit deletes the repository's old shards
(``CommitOperationDelete``) in the same commit that adds the new ones, so ``load_dataset`` gives exactly the
new rows. The card's metadata has ``license`` (given, or the single value of the rows' ``license`` column),
``language``, ``size_categories`` (from the row count) and ``task_categories``. A Hub push needs a token (argument, ``HF_TOKEN`` or the
huggingface_hub login); the token is never logged.
"""

from __future__ import annotations

import fnmatch
import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging

logger = logging.get_logger(__name__)

DEFAULT_CONFIG = "default"


def threshold_config_name(threshold: float) -> str:
    """Config name of the rows with ``int_score >= threshold`` (``int_score_ge_3``)."""
    value = int(threshold) if float(threshold).is_integer() else threshold
    return f"int_score_ge_{value}".replace(".", "p")


def int_scores(scores: np.ndarray, bins: int | None = None) -> np.ndarray:
    """FineWeb-Edu ``int_score``: the rounded score, or with ``bins`` the quantile bin ``0..bins-1``."""
    scores = np.asarray(scores, dtype=np.float64)
    if bins is None:
        return np.rint(scores).astype(np.int64)
    if bins < 2:
        raise ValueError(f"int_score_bins must be >= 2, got {bins}")
    edges = np.quantile(scores, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, scores, side="right").astype(np.int64)


def _shard_count(dataset, max_shard_bytes: int) -> int:
    return max(1, math.ceil(dataset.data.nbytes / max_shard_bytes))


def _write_shards(dataset, folder: Path, split: str, max_shard_bytes: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    n = _shard_count(dataset, max_shard_bytes)
    names = []
    for i in range(n):
        name = f"{split}-{i:05d}-of-{n:05d}.parquet"
        dataset.shard(num_shards=n, index=i, contiguous=True).to_parquet(str(folder / name))
        names.append(name)
    return names


def _histogram(scores: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(scores, bins=50, color="#4c72b0")
    ax.set_xlabel("score")
    ax.set_ylabel("documents")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown_params(params: dict[str, Any]) -> str:
    if not params:
        return "_none recorded_\n"
    lines = ["| parameter | value |", "|---|---|"]
    lines += [f"| {k} | `{json.dumps(v, default=str)}` |" for k, v in params.items()]
    return "\n".join(lines) + "\n"


SIZE_CATEGORIES = (
    (10**3, "n<1K"),
    (10**4, "1K<n<10K"),
    (10**5, "10K<n<100K"),
    (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"),
    (10**9, "100M<n<1B"),
    (10**10, "1B<n<10B"),
    (10**11, "10B<n<100B"),
    (10**12, "100B<n<1T"),
)


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket of a row count."""
    return next((name for bound, name in SIZE_CATEGORIES if rows < bound), "n>1T")


def _single_license(dataset) -> str | None:
    for column in ("license", "licence"):
        if column in dataset.column_names:
            values = {v for v in dataset.unique(column) if v}
            return values.pop() if len(values) == 1 else None
    return None


def _clear_old_shards(folder: Path) -> None:
    """Remove the parquet shards of an earlier publication (``data/`` and every threshold config)."""
    for sub in [folder / "data", *folder.glob("int_score_ge_*")]:
        if sub.is_dir():
            for shard in sub.glob("*.parquet"):
                shard.unlink()


def _dataset_card(
    configs,
    counts,
    method,
    model_id,
    model_revision,
    heads,
    reference_model,
    params,
    score_column,
    bins,
    title,
    license=None,
    language=None,
    task_categories=None,
    size_categories=None,
):
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(
        pretty_name=title,
        license=license,
        language=list(language) if language else None,
        task_categories=list(task_categories) if task_categories else None,
        size_categories=[size_categories] if size_categories else None,
        tags=["hf-select", "data-selection", method],
        configs=configs,
        hf_select={
            "method": method,
            "scoring_model": model_id,
            "scoring_model_revision": model_revision,
            "heads": json.loads(json.dumps(heads)),  # tuples would become python/tuple YAML tags
            "reference_model": reference_model,
            "params": params,
            "score_column": score_column,
            "int_score_bins": bins,
            "rows": counts,
        },
    )
    what = []
    if heads:
        what.append(f"- Heads: `{json.dumps(heads)}`")
    if reference_model:
        what.append(f"- Reference model: `{reference_model}`")
    rows = "\n".join(f"| `{name}` | {count} |" for name, count in counts.items())
    int_rule = (
        "the score rounded to the nearest integer"
        if bins is None
        else f"the {bins}-quantile bin of the score (0 = lowest, {bins - 1} = highest)"
    )
    body = f"""
# {title}

Scored with **{method}** by hf-select (data selection on the Hugging Face stack).

- Scoring model: `{model_id}` (revision `{model_revision or "unknown"}`)
{"".join(line + chr(10) for line in what)}- `score`: the float score (from column `{score_column}`); `int_score`: {int_rule}.

## Parameters

{_markdown_params(params)}
## Configs

Each threshold is its own config, FineWeb-Edu style: `load_dataset(repo, "<config>")`.

| config | rows |
|---|---|
{rows}

## Score distribution

![score histogram](score_histogram.png)
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _write_configs(data, ints, folder: Path, thresholds, split: str, max_shard_size: int):
    """The parquet shards of the default config and of one config per ``int_score`` threshold; returns the
    card's config entries and row counts."""
    configs, counts = [], {}
    _write_shards(data, folder / "data", split, max_shard_size)
    configs.append(
        {"config_name": DEFAULT_CONFIG, "data_files": [{"split": split, "path": f"data/{split}-*"}]}
    )
    counts[DEFAULT_CONFIG] = len(data)
    for threshold in thresholds:
        name = threshold_config_name(threshold)
        keep = np.nonzero(ints >= threshold)[0]
        if len(keep) == 0:
            logger.warning(
                f"threshold {threshold}: no rows have int_score >= {threshold}; config {name} skipped"
            )
            continue
        _write_shards(data.select(keep), folder / name, split, max_shard_size)
        configs.append({"config_name": name, "data_files": [{"split": split, "path": f"{name}/{split}-*"}]})
        counts[name] = int(len(keep))
    return configs, counts


def write_scored_dataset(
    dataset,
    folder: str | Path,
    score_column: str = "score",
    thresholds: Sequence[float] = (),
    method: str = "unknown",
    model_id: str | None = None,
    model_revision: str | None = None,
    heads: Any = None,
    reference_model: str | None = None,
    params: dict[str, Any] | None = None,
    int_score_bins: int | None = None,
    split: str = "train",
    max_shard_size: int = 500 * 2**20,
    title: str | None = None,
    license: str | None = None,
    language: Sequence[str] = (),
    task_categories: Sequence[str] = ("text-generation",),
) -> Path:
    """Write the Hub layout of a scored dataset into ``folder`` (see the module docstring); returns it.

    Args:
        dataset: a ``datasets.Dataset`` with a float column ``score_column``.
        thresholds: ``int_score`` thresholds; each gets a config ``int_score_ge_<t>``.
        method, model_id, model_revision, heads, reference_model, params: what scored the data (card).
        int_score_bins: None for FineWeb-Edu rounding; k for quantile bins (unbounded scores).
        max_shard_size: bytes per parquet shard (Arrow size).
        license: card license (SPDX id); default: the single value of a ``license`` column, if any.
        language, task_categories: card metadata (``size_categories`` comes from the row count).

    Parquet shards of an earlier publication in ``folder`` are removed first (republishing keeps no stale
    rows).
    """
    if score_column not in dataset.column_names:
        raise ValueError(f"dataset has no score column {score_column!r}; columns: {dataset.column_names}")
    if len(dataset) == 0:
        raise ValueError("cannot publish an empty dataset")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _clear_old_shards(folder)
    scores = np.asarray(dataset[score_column], dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError(f"column {score_column!r} holds NaN or infinite scores")
    ints = int_scores(scores, int_score_bins)
    drop = [c for c in dict.fromkeys(("score", "int_score", score_column)) if c in dataset.column_names]
    data = dataset.remove_columns(drop)
    data = data.add_column("score", scores.tolist()).add_column("int_score", ints.tolist())

    configs, counts = _write_configs(data, ints, folder, thresholds, split, max_shard_size)
    title = title or f"{method} scores"
    _histogram(scores, folder / "score_histogram.png", title)
    card = _dataset_card(
        configs,
        counts,
        method,
        model_id,
        model_revision,
        heads,
        reference_model,
        params or {},
        score_column,
        int_score_bins,
        title,
        license=license or _single_license(dataset),
        language=language,
        task_categories=task_categories,
        size_categories=size_category(len(data)),
    )
    card.save(folder / "README.md")
    return folder


def _resolve_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PermissionError(
            "pushing to the Hub needs a token (token=..., HF_TOKEN or `hf auth login`); "
            "to write the same layout locally pass local_dir= instead"
        )
    return token


def commit_folder(
    folder: str | Path,
    repo_id: str,
    repo_type: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload with hf-select",
    retries: int = 3,
    backoff: float = 2.0,
    api=None,
    delete_stale: Sequence[str] = (),
) -> str:
    """Upload every file of ``folder`` to ``repo_id`` in one ``create_commit``, retried with back-off.

    ``delete_stale``: glob patterns (e.g. ``("*.parquet",)``) of repository files to delete in the same commit
    when the upload does not replace them (the shards of an earlier publication). Returns the commit URL. The
    token is used, never logged.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = api or HfApi(token=_resolve_token(token))
    folder = Path(folder)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]
    if delete_stale:
        new = {op.path_in_repo for op in operations}
        existing = api.list_repo_files(repo_id, repo_type=repo_type)
        operations += [
            CommitOperationDelete(path_in_repo=path)
            for path in existing
            if path not in new and any(fnmatch.fnmatch(path, pattern) for pattern in delete_stale)
        ]
    for attempt in range(1, retries + 1):
        try:
            info = api.create_commit(repo_id, operations, commit_message=commit_message, repo_type=repo_type)
            return str(getattr(info, "commit_url", info))
        except Exception as exc:  # network and 5xx errors: retry; the last one propagates
            if attempt == retries:
                raise
            wait = backoff**attempt
            logger.warning(
                f"commit to {repo_id} failed ({type(exc).__name__}); retry {attempt}/{retries - 1} in {wait:.0f}s"
            )
            time.sleep(wait)
    raise AssertionError("unreachable")


def _check_destination(repo_id, local_dir):
    if (repo_id is None) == (local_dir is None):
        raise ValueError(
            "give exactly one of repo_id (push to the Hub) or local_dir (write the layout locally)"
        )


def push_scored_dataset(
    dataset,
    repo_id: str | None = None,
    *,
    local_dir: str | Path | None = None,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    retries: int = 3,
    **layout: Any,
) -> str:
    """Publish a scored dataset FineWeb-Edu style to the Hub (``repo_id``) or to a local folder (``local_dir``).

    ``layout`` goes to :func:`write_scored_dataset` (``score_column``, ``thresholds``, ``method``, ``model_id``,
    ``model_revision``, ``heads``, ``reference_model``, ``params``, ``int_score_bins``, ``split``, ...).
    Returns the local folder or the commit URL. ``load_dataset(folder_or_repo, config)`` loads it back.
    """
    _check_destination(repo_id, local_dir)
    if local_dir is not None:
        return str(write_scored_dataset(dataset, local_dir, **layout))
    token = _resolve_token(token)
    with tempfile.TemporaryDirectory() as folder:
        write_scored_dataset(dataset, folder, **layout)
        message = commit_message or f"Upload {layout.get('method', 'scored')} dataset with hf-select"
        return commit_folder(
            folder, repo_id, "dataset", token, private, message, retries, delete_stale=("*.parquet",)
        )


def _model_card(selection: dict[str, Any], base_model, datasets, eval_table, title):
    from huggingface_hub import ModelCard, ModelCardData

    method = str(selection.get("method", "unknown"))
    data = ModelCardData(
        base_model=base_model,
        datasets=datasets,
        library_name="transformers",
        tags=["hf-select", "data-selection", method],
        hf_select={"data_selection": selection},
    )
    body = f"""
# {title}

Trained on data selected with **{method}** by hf-select.

## Data selection

{_markdown_params(selection)}"""
    if eval_table:
        body += f"\n## Evaluation\n\n{eval_table}\n"
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write_model(
    model,
    tokenizer,
    folder: str | Path,
    selection: dict[str, Any],
    base_model: str | None = None,
    datasets: list[str] | None = None,
    eval_table: str | None = None,
    title: str | None = None,
) -> Path:
    """Save ``model`` (safetensors) and ``tokenizer`` into ``folder`` with a model card of the data selection."""
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    title = title or f"{type(model).__name__} trained on {selection.get('method', 'selected')} data"
    _model_card(selection, base_model, datasets, eval_table, title).save(folder / "README.md")
    return folder


def push_model(
    model,
    tokenizer=None,
    repo_id: str | None = None,
    *,
    local_dir: str | Path | None = None,
    selection: dict[str, Any] | None = None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    eval_table: str | None = None,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    retries: int = 3,
) -> str:
    """Publish a trained model with a card that records its data selection (method, scorer, threshold, ...).

    ``selection`` is a dict such as ``{"method": "attention_influence", "dataset": ..., "fraction": 0.2}``;
    ``eval_table`` an optional markdown table (e.g. :func:`hf_select.eval.markdown_table`).
    """
    _check_destination(repo_id, local_dir)
    selection = dict(selection or {})
    if local_dir is not None:
        return str(write_model(model, tokenizer, local_dir, selection, base_model, datasets, eval_table))
    token = _resolve_token(token)
    with tempfile.TemporaryDirectory() as folder:
        write_model(model, tokenizer, folder, selection, base_model, datasets, eval_table)
        message = commit_message or "Upload model trained on hf-select data"
        return commit_folder(
            folder, repo_id, "model", token, private, message, retries, delete_stale=("*.safetensors",)
        )
