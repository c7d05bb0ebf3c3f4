"""Scoring steps: the existing scorers (:class:`~hf_select.AttentionInfluence`, RHO-1 reference losses) wrapped
as datatrove ``PipelineStep`` s. No scoring logic lives here, only the datatrove plumbing:

* **one model per worker process**: the step holds only the model's name or path (steps are pickled to the
  workers); the model is loaded on first use in each process and cached for the tasks that process runs
  next, on :func:`worker_device`;
* **length-sorted batches**: documents are taken ``docs_per_chunk`` at a time and handed to the scorer, which
  sorts the chunk by length and runs ``batch_size`` sequences per forward pass;
* **stats**: ``documents``, ``tokens`` (predicted tokens), ``too_short`` (rows with nothing to predict),
  ``restored_documents`` (taken from a checkpoint) in datatrove's per-task stats;
* **resume**: datatrove never re-runs a task that has its completion marker. Inside a task, every scored chunk
  is saved to ``checkpoint_dir`` (atomically, with the document ids and a fingerprint of the step and the
  weights) before its documents go downstream, so a killed task that re-runs restores its finished chunks
  instead of scoring them again (datatrove has no intermediate state, datatrove issue #316). The re-run
  rewrites the task's output file from the start, so nothing is duplicated. A checkpoint whose ids or
  fingerprint differ from the re-run's is an error, never silently reused. ``checkpoint_dir`` must be a
  POSIX path visible to every worker (local disk for the Local executor, a shared file system on Slurm/Ray).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from ..attention_influence.scorer import AttentionInfluenceConfig
from ..fingerprint import fingerprint
from ..resume import ResumeFolder

# process-wide cache: (loading arguments) -> (model, tokenizer, model fingerprint); one entry per worker
_WORKER_MODELS: dict[tuple, tuple[Any, Any, dict]] = {}


def worker_device() -> str:
    """Device of this worker: ``cpu`` without CUDA, else ``cuda:<local rank>``.

    The local rank is ``LOCAL_RANK`` (torchrun), else ``SLURM_LOCALID`` (srun), else the index of the worker in
    the Local executor's process pool (stable for the process lifetime, so two concurrent workers never share
    a GPU when there are as many GPUs as workers; 0 without a pool, where tasks run one after another), modulo
    the number of visible GPUs. Slurm and Ray (``gpus_per_task=1``) make one GPU visible per task: ``cuda:0``.
    """
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    local = os.environ.get("LOCAL_RANK") or os.environ.get("SLURM_LOCALID")
    if local is not None:
        index = int(local)
    else:
        try:
            import multiprocess  # datatrove's process pool

            identity = multiprocess.current_process()._identity
        except ImportError:
            identity = ()
        index = identity[0] - 1 if identity else 0
    return f"cuda:{index % torch.cuda.device_count()}"


def _load_worker_model(
    model: str,
    tokenizer: str | None,
    revision: str | None,
    dtype: str,
    attn_implementation: str | None,
    trust_remote_code: bool,
    device: str,
):
    key = (model, tokenizer, revision, dtype, attn_implementation, trust_remote_code, device)
    if key not in _WORKER_MODELS:
        from ..fingerprint import model_fingerprint
        from ..loading import check_vocabulary, load_causal_lm, load_tokenizer

        lm = load_causal_lm(model, revision, dtype, attn_implementation, trust_remote_code, device)
        tok = load_tokenizer(tokenizer or model, None if tokenizer else revision, trust_remote_code)
        check_vocabulary(lm, tok, model)
        _WORKER_MODELS[key] = (lm, tok, model_fingerprint(lm, tok))
    return _WORKER_MODELS[key]


class ChunkCheckpoint:
    """Scored chunks of one task: ``<folder>/<rank>-of-<world_size>/chunk-<index>.json``, by
    :class:`hf_select.resume.ResumeFolder` (the resume mechanism of every long job).

    Each file holds the chunk's document ids, the run's fingerprint and one metadata dict per document, and is
    written atomically; a file cut by a kill is removed and its chunk scored again.
    """

    def __init__(self, folder: str | os.PathLike, rank: int, world_size: int, run_fingerprint: str):
        self.folder = Path(folder) / f"{rank:05d}-of-{world_size:05d}"
        self.run_fingerprint = run_fingerprint
        self._store = ResumeFolder(self.folder, run_fingerprint, marker_suffix=".json", what="checkpoints")
        if self.folder.is_dir():
            self._store.remove_orphans()

    @staticmethod
    def _name(index: int) -> str:
        return f"chunk-{index:06d}"

    def path(self, index: int) -> Path:
        return self._store.marker(self._name(index))

    def load(self, index: int, ids: list[str]) -> list[dict] | None:
        data = self._store.finished(self._name(index))
        if data is None:
            return None
        if data["ids"] != ids:
            raise ValueError(
                f"checkpoint {self.path(index)} holds other documents than this task reads now (changed input "
                "files, tasks or docs_per_chunk); use a new checkpoint_dir"
            )
        return data["values"]

    def save(self, index: int, ids: list[str], values: list[dict]) -> None:
        self._store.commit(self._name(index), {"ids": ids, "values": values})


class _ModelScoringStep(PipelineStep):
    """Shared plumbing of the scoring steps (see the module docstring). Subclasses implement
    :meth:`score_chunk` (documents -> one metadata dict each) and :meth:`_count`."""

    type = "🎯 - SCORER"

    def __init__(
        self,
        model: str,
        tokenizer: str | None = None,
        revision: str | None = None,
        dtype: str = "auto",
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        device: str | None = None,
        batch_size: int = 8,
        docs_per_chunk: int = 1000,
        checkpoint_dir: str | None = None,
        num_threads: int | None = None,
    ):
        super().__init__()
        if not isinstance(model, str):
            raise TypeError(
                "model must be a Hub id or a local folder (steps are pickled to the workers, which load the "
                f"model themselves), got {type(model).__name__}"
            )
        if batch_size < 1 or docs_per_chunk < 1:
            raise ValueError(f"batch_size and docs_per_chunk must be >= 1, got {batch_size}, {docs_per_chunk}")
        self.model_name = model
        self.tokenizer_name = tokenizer
        self.revision = revision
        self.dtype = dtype
        self.attn_implementation = attn_implementation
        self.trust_remote_code = trust_remote_code
        self.device = device
        self.batch_size = batch_size
        self.docs_per_chunk = docs_per_chunk
        self.checkpoint_dir = checkpoint_dir
        self.num_threads = num_threads

    # -- to implement ------------------------------------------------------------------------------------

    def config(self) -> dict:
        """Everything besides the weights that changes the scores (part of the checkpoint fingerprint)."""
        return {"class": type(self).__name__, "dtype": self.dtype, "attn": self.attn_implementation}

    def prepare(self, model, tokenizer) -> None:
        """Build the wrapped scorer once per task (after the model is loaded)."""

    def score_chunk(self, documents: list[Document]) -> list[dict]:
        raise NotImplementedError

    def _count(self, values: dict) -> None:
        raise NotImplementedError

    # -- plumbing ----------------------------------------------------------------------------------------

    def _set_threads(self) -> None:
        import torch

        threads = self.num_threads
        if threads is None:
            cpus = int(os.environ.get("DATATROVE_CPUS_PER_TASK", "-1"))
            threads = cpus if cpus > 0 else None
        if threads is not None:
            torch.set_num_threads(threads)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def load_model(self):
        """The worker's ``(model, tokenizer, model fingerprint)``, loaded once per process."""
        device = self.device or worker_device()
        return _load_worker_model(
            self.model_name,
            self.tokenizer_name,
            self.revision,
            self.dtype,
            self.attn_implementation,
            self.trust_remote_code,
            device,
        )

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data is None:
            return
        self._set_threads()
        model, tokenizer, model_fp = self.load_model()
        self.prepare(model, tokenizer)
        checkpoint = None
        if self.checkpoint_dir:
            run_fp = fingerprint(self.config(), model_fp, self.docs_per_chunk)
            checkpoint = ChunkCheckpoint(self.checkpoint_dir, rank, world_size, run_fp)
        for index, chunk in enumerate(batched(data, self.docs_per_chunk)):
            ids = [str(doc.id) for doc in chunk]
            values = checkpoint.load(index, ids) if checkpoint is not None else None
            if values is None:
                with self.track_time("chunk"):
                    values = self.score_chunk(chunk)
                if checkpoint is not None:
                    checkpoint.save(index, ids, values)
            else:
                self.stat_update("restored_documents", value=len(chunk))
            for doc, doc_values in zip(chunk, values):
                doc.metadata.update(doc_values)
                self.stat_update("documents")
                self._count(doc_values)
                yield doc


def _load_heads(heads: str | os.PathLike | Iterable[Sequence[int]]) -> list[tuple[int, int]]:
    if isinstance(heads, (str, os.PathLike)):
        from ..attention_influence.retrieval_heads import RetrievalHeads

        return [tuple(h) for h in RetrievalHeads.load(heads).selected]
    pairs = [tuple(int(x) for x in h) for h in heads]
    if not pairs or any(len(h) != 2 for h in pairs):
        raise ValueError(f"heads must be (layer, head) pairs or a RetrievalHeads JSON file, got {heads!r}")
    return pairs


class AttentionInfluenceScorer(_ModelScoringStep):
    """AttentionInfluence scores (arXiv 2505.07293, Eq. 5) as a datatrove step, by
    :class:`hf_select.AttentionInfluence` (same chunking, sorting, short-document policy and values as its
    ``Dataset.map`` path: both read one :class:`~hf_select.attention_influence.AttentionInfluenceConfig`).

    Adds ``ai_loss_base``, ``ai_loss_ref``, ``ai_score``, ``ai_num_tokens`` and ``ai_too_short`` (True, with a
    NaN ``ai_score``, for documents with fewer than ``min_tokens`` predicted tokens or of whitespace only) to
    ``Document.metadata``.

    Args:
        model: Hub id or local folder of the base causal LM (loaded once per worker, see :func:`worker_device`).
        heads: ``(layer, head)`` pairs to mask, or the path of a RetrievalHeads JSON (``hf-select detect-heads``);
            None: those of ``config``.
        config: the scorer's :class:`~hf_select.attention_influence.AttentionInfluenceConfig` (the single source
            of its parameters; the document text is always ``Document.text``). Without it, one is built from
            ``heads``, ``max_length``, ``batch_size``, ``min_tokens`` and ``reuse_lower_layers``.
        docs_per_chunk: documents sorted by length together, and the unit of the in-task checkpoint.
        checkpoint_dir: folder of the in-task checkpoints (None: no in-task resume, only datatrove's per task).
        num_threads: torch threads per worker (None: ``DATATROVE_CPUS_PER_TASK`` when the executor sets it;
            :func:`make_executor` sets them by :func:`hf_select.threads.thread_count` for the Local executor).
        **load_kwargs: how to load the model: ``tokenizer``, ``revision``, ``dtype``, ``attn_implementation``,
            ``trust_remote_code``, ``device`` (None: :func:`worker_device`).
    """

    name = "AttentionInfluence"

    def __init__(
        self,
        model: str,
        heads: str | os.PathLike | Iterable[Sequence[int]] | None = None,
        max_length: int = 2048,
        batch_size: int = 8,
        docs_per_chunk: int = 1000,
        checkpoint_dir: str | None = None,
        num_threads: int | None = None,
        reuse_lower_layers: bool = True,
        min_tokens: int = 16,
        config: AttentionInfluenceConfig | None = None,
        **load_kwargs: Any,
    ):
        if config is None:
            config = AttentionInfluenceConfig(
                max_length=max_length,
                batch_size=batch_size,
                min_tokens=min_tokens,
                reuse_lower_layers=reuse_lower_layers,
            )
        if heads is not None:
            config = replace(config, heads=_load_heads(heads), heads_file=None)
        if not config.heads:
            raise ValueError("AttentionInfluenceScorer needs heads: (layer, head) pairs or a RetrievalHeads JSON")
        self.ai_config = replace(config, text_column="text", heads_file=None)
        super().__init__(model, batch_size=self.ai_config.batch_size, docs_per_chunk=docs_per_chunk,
                         checkpoint_dir=checkpoint_dir, num_threads=num_threads, **load_kwargs)  # fmt: skip
        self._scorer = None

    heads = property(lambda self: self.ai_config.heads)
    max_length = property(lambda self: self.ai_config.max_length)

    def config(self) -> dict:
        return {**super().config(), **dataclasses.asdict(self.ai_config)}

    def prepare(self, model, tokenizer) -> None:
        from ..attention_influence.scorer import AttentionInfluence

        self._scorer = AttentionInfluence(model, tokenizer, config=self.ai_config)

    def score_chunk(self, documents: list[Document]) -> list[dict]:
        from ..attention_influence.prefilter import REASON_COLUMN
        from ..attention_influence.scorer import SCORE_COLUMNS

        batch = {"text": [doc.text for doc in documents]}
        columns = SCORE_COLUMNS
        if self.ai_config.prefilter != "none":
            missing = [doc.id for doc in documents if REASON_COLUMN not in doc.metadata]
            if missing:
                raise ValueError(
                    f"prefilter {self.ai_config.prefilter!r}: documents {missing[:3]} were not flagged; put "
                    "prefilter_steps(config) before AttentionInfluenceScorer (attention_influence_pipeline does)"
                )
            batch[REASON_COLUMN] = [doc.metadata[REASON_COLUMN] for doc in documents]
        out = self._scorer(batch)
        return [{name: out[name][i] for name in columns} for i in range(len(documents))]

    def _count(self, values: dict) -> None:
        self.stat_update("tokens", value=int(values["ai_num_tokens"]))
        if values["ai_too_short"]:
            self.stat_update("too_short")

    def __getstate__(self):
        return {**self.__dict__, "_scorer": None}  # the scorer holds the model: never pickle it

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from ..attention_influence.prefilter import REASON_COLUMN

        dropped = 0
        for doc in super().run(data, rank, world_size):
            if doc.metadata.get(REASON_COLUMN):
                dropped += 1
                self.stat_update("prefiltered")
            yield doc
        if dropped:
            from datatrove.utils.logging import logger

            logger.warning(f"prefilter: {dropped} documents dropped before scoring (null ai_score), see the stats")


class PrefilterFlagger(PipelineStep):
    """One filter of AttentionInfluence's ``prefilter`` (arXiv 2505.07293 dedups before scoring) as a datatrove
    step that flags instead of dropping: a document the filter drops keeps flowing, with the reason in
    ``Document.metadata["ai_filter_reason"]`` (``""``: kept), and :class:`AttentionInfluenceScorer` gives it a
    null score. A document already flagged by an earlier flagger is passed on untouched.

    Args:
        label: ``duplicate`` (exact deduplication within the task: the first occurrence of a text is kept) or the
            prefix of the reason (``repetition``, ``quality``).
        datatrove_filter: the datatrove filter (``GopherRepetitionFilter``, ``GopherQualityFilter`` ...) whose
            ``filter(doc)`` decides; None with ``label="duplicate"``.

    :func:`prefilter_steps` builds the steps of a config's ``prefilter``; the decisions are those of
    :func:`hf_select.attention_influence.prefilter.filter_reason` on the ``Dataset.map`` path.
    """

    type = "🔻 - FILTER"

    def __init__(self, label: str, datatrove_filter=None):
        super().__init__()
        if (label == "duplicate") != (datatrove_filter is None):
            raise ValueError("PrefilterFlagger: give a datatrove filter, or label='duplicate' for exact dedup")
        self.label = label
        self.datatrove_filter = datatrove_filter
        self.name = f"AttentionInfluence prefilter ({label})"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from ..attention_influence.prefilter import KEPT, REASON_COLUMN, filter_reason

        if data is None:
            return
        seen: set[str] = set()
        filters = [] if self.datatrove_filter is None else [(self.label, self.datatrove_filter)]
        for doc in data:
            self.stat_update("total")
            if doc.metadata.get(REASON_COLUMN):
                yield doc
                continue
            with self.track_time():
                reason = filter_reason(doc.text, filters, seen if self.datatrove_filter is None else None)
            doc.metadata[REASON_COLUMN] = reason
            if reason != KEPT:
                self.stat_update("dropped", f"dropped_{reason}")
            yield doc


def prefilter_steps(config: AttentionInfluenceConfig) -> list[PrefilterFlagger]:
    """The flagging steps of ``config.prefilter`` in order (exact dedup, then each datatrove filter with the
    thresholds of ``config.prefilter_options``); empty for ``none``."""
    from ..attention_influence.prefilter import DUPLICATE, gopher_filters

    filters = gopher_filters(config.prefilter, config.prefilter_options)
    if not filters:
        return []
    return [PrefilterFlagger(DUPLICATE), *(PrefilterFlagger(label, flt) for label, flt in filters)]


ROW_COLUMNS = ("input_ids", "labels", "position_ids")


def packed_row_adapter(self, data: dict, path: str, id_in_file: int | str) -> dict:
    """Reader adapter (``JsonlReader(adapter=packed_row_adapter)``, ``ParquetReader(...)``) for packed training
    rows (``input_ids`` and optionally ``labels``, ``position_ids``, ``num_documents``: the output of
    ``hf_select.pack_documents`` / ``training_rows`` saved as JSONL or parquet).

    The row's columns go to ``Document.metadata``. datatrove readers drop documents without text, so the row's
    id (``id`` column, else ``<file>/<row>``) also stands in as its text.
    """
    data = dict(data)
    if "input_ids" not in data:
        raise KeyError(f"packed rows need an 'input_ids' column; {path} row {id_in_file} has {sorted(data)}")
    row_id = str(data.pop(self.id_key, f"{path}/{id_in_file}"))
    data.pop(self.text_key, None)
    return {"text": row_id, "id": row_id, "metadata": data}


class ReferenceLossScorer(_ModelScoringStep):
    """RHO-1 reference losses (arXiv 2404.07965) of packed training rows as a datatrove step, by
    :mod:`hf_select.slm.reference_losses` (the same per-batch function as :func:`~hf_select.compute_reference_losses`).

    Reads ``input_ids`` and optionally ``labels`` and ``position_ids`` from ``Document.metadata`` (read the rows
    with :func:`packed_row_adapter`) and adds ``ref_loss`` (and ``ref_entropy`` with ``with_entropy``), one
    float per token aligned with ``input_ids``: the row format SLMTrainer reads. Write with
    ``ParquetWriter(..., expand_metadata=True)`` to get one column per field. The rows must be exactly the
    packed rows used for training (a token's loss depends on its context); rows are batched sorted by length
    (padding never changes a row's losses).

    Args:
        model: Hub id or local folder of the reference model (loaded once per worker).
        batch_size: rows per forward pass.
        storage_dtype: ``float32``, ``float16`` or ``bfloat16``: values are rounded to it.
        with_entropy: also add ``ref_entropy`` (for the self-reference score).
        chunk_size: predicted tokens projected through the LM head at once.
        pad_token_id: padding id inside a batch (None: the tokenizer's, else 0).
        docs_per_chunk, checkpoint_dir, num_threads, **load_kwargs: as for :class:`AttentionInfluenceScorer`.
    """

    name = "RHO-1 reference losses"

    def __init__(
        self,
        model: str,
        batch_size: int = 8,
        storage_dtype: str = "float32",
        with_entropy: bool = False,
        chunk_size: int = 2048,
        pad_token_id: int | None = None,
        docs_per_chunk: int = 1000,
        checkpoint_dir: str | None = None,
        num_threads: int | None = None,
        **load_kwargs: Any,
    ):
        from ..slm.reference_losses import STORAGE_DTYPES

        super().__init__(model, batch_size=batch_size, docs_per_chunk=docs_per_chunk,
                         checkpoint_dir=checkpoint_dir, num_threads=num_threads, **load_kwargs)  # fmt: skip
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {STORAGE_DTYPES}, got {storage_dtype!r}")
        self.storage_dtype = storage_dtype
        self.with_entropy = with_entropy
        self.chunk_size = chunk_size
        self.pad_token_id = pad_token_id
        self._model = None
        self._pad = 0

    def config(self) -> dict:
        return {**super().config(), "storage_dtype": self.storage_dtype, "with_entropy": self.with_entropy}

    def prepare(self, model, tokenizer) -> None:
        self._model = model.eval()
        pad = self.pad_token_id if self.pad_token_id is not None else tokenizer.pad_token_id
        self._pad = pad if pad is not None else 0

    def score_chunk(self, documents: list[Document]) -> list[dict]:
        import torch

        from ..slm.reference_losses import reference_batch

        rows = []
        for doc in documents:
            if "input_ids" not in doc.metadata:
                raise KeyError(
                    f"document {doc.id} has no metadata 'input_ids': ReferenceLossScorer scores packed training "
                    "rows (read them with hf_select.datatrove.packed_row_adapter)"
                )
            ids = list(doc.metadata["input_ids"])
            labels, positions = doc.metadata.get("labels"), doc.metadata.get("position_ids")
            rows.append(
                {
                    "input_ids": ids,
                    "labels": ids if labels is None else list(labels),
                    "position_ids": list(range(len(ids))) if positions is None else list(positions),
                }
            )
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
        columns = ("ref_loss", "ref_entropy") if self.with_entropy else ("ref_loss",)
        values: list[dict | None] = [None] * len(rows)
        for start in range(0, len(order), self.batch_size):
            picked = order[start : start + self.batch_size]
            batch = {k: [rows[i][k] for i in picked] for k in ROW_COLUMNS}
            out = reference_batch(
                batch,
                self._model,
                self._pad,
                self.with_entropy,
                self.chunk_size,
                getattr(torch, self.storage_dtype),
            )
            for j, i in enumerate(picked):
                values[i] = {name: out[name][j] for name in columns}
                values[i]["ref_num_tokens"] = _predicted_tokens(rows[i])
        return values

    def _count(self, values: dict) -> None:
        self.stat_update("tokens", value=int(values["ref_num_tokens"]))
        if values["ref_num_tokens"] == 0:
            self.stat_update("too_short")

    def __getstate__(self):
        return {**self.__dict__, "_model": None}


def _predicted_tokens(row: dict) -> int:
    """Tokens of a packed row whose loss is defined (same rule as :func:`hf_select.token_loss.prediction_mask`)."""
    import torch

    from ..token_loss import prediction_mask

    ids = torch.tensor([row["input_ids"]])
    positions = torch.tensor([row["position_ids"]])
    return int(prediction_mask(ids, None, positions, torch.tensor([row["labels"]])).sum())

