"""Document-masked packing for causal-LM pretraining.

Every packed row starts with a new document. A document that does not fit in the rest of a row is cut at the
row's end; by default its overflow is discarded (MeCo's rule: never carried over), with ``overflow="carry"``
the overflow starts the next row as a document of its own. Position ids restart at 0 for every document, so
transformers' sdpa/eager attention derives a block-diagonal causal mask from them (``attention_mask=None``,
no KV cache): no token attends across documents and no flash-attention is needed.

Labels follow the HF convention (not shifted; the model shifts). The first token of every document is
``-100`` (it would be predicted from the previous document), as are tokens whose document labels say so
(e.g. MeCo's metadata prefix).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .token_loss import IGNORE_INDEX


def pack_documents(
    input_ids: Sequence[Sequence[int]],
    max_length: int,
    labels: Sequence[Sequence[int]] | None = None,
    overflow: str = "discard",
    drop_untrainable: bool = True,
    columns: dict[str, Sequence[Sequence]] | None = None,
) -> dict[str, list[list[int]]]:
    """Pack tokenised documents into rows of at most ``max_length`` tokens.

    Args:
        input_ids: token ids of each document, in order.
        max_length: tokens per packed row.
        labels: per-document labels (``-100`` = not trained); defaults to the ids.
        overflow: ``"discard"`` (default) drops the part of a document that does not fit in its row;
            ``"carry"`` puts it at the start of the next row(s) as a new segment (positions restart, so its
            first token is not trained).
        drop_untrainable: drop rows in which no label is trained (they would give a 0/0 loss).
        columns: extra per-token columns (name -> per-document values, e.g. ``ref_loss``), cut and packed
            exactly like the ids.

    Returns:
        A dict of lists (one entry per row): ``input_ids``, ``labels``, ``position_ids``, ``num_documents``.
        Usable directly as a ``Dataset.map(batched=True)`` result.
    """
    if overflow not in ("discard", "carry"):
        raise ValueError(f"overflow must be 'discard' or 'carry', got {overflow!r}")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    columns = columns or {}
    rows: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": [], "num_documents": []}
    rows.update({name: [] for name in columns})
    row_cols: dict[str, list] = {name: [] for name in columns}
    row_ids: list[int] = []
    row_labels: list[int] = []
    row_pos: list[int] = []
    row_docs = 0

    def flush():
        nonlocal row_ids, row_labels, row_pos, row_docs, row_cols
        if row_ids and (not drop_untrainable or any(x != IGNORE_INDEX for x in row_labels)):
            rows["input_ids"].append(row_ids)
            rows["labels"].append(row_labels)
            rows["position_ids"].append(row_pos)
            rows["num_documents"].append(row_docs)
            for name, values in row_cols.items():
                rows[name].append(values)
        row_ids, row_labels, row_pos, row_docs = [], [], [], 0
        row_cols = {name: [] for name in columns}

    for i, ids in enumerate(input_ids):
        ids = list(ids)
        if not ids:
            continue
        doc_labels = list(labels[i]) if labels is not None else list(ids)
        if len(doc_labels) != len(ids):
            raise ValueError(f"document {i}: {len(ids)} ids but {len(doc_labels)} labels")
        doc_cols = {name: list(values[i]) for name, values in columns.items()}
        for name, values in doc_cols.items():
            if len(values) != len(ids):
                raise ValueError(f"document {i}: {len(ids)} ids but {len(values)} values of {name!r}")
        while ids:
            if row_ids and max_length - len(row_ids) < 2:  # a 1-token piece has nothing to train
                flush()
            room = max_length - len(row_ids)
            row_ids += ids[:room]
            row_labels += [IGNORE_INDEX, *doc_labels[1:room]]
            row_pos += list(range(len(ids[:room])))
            for name, values in doc_cols.items():
                row_cols[name] += values[:room]
            row_docs += 1
            if len(row_ids) >= max_length:
                flush()
            ids, doc_labels = (ids[room:], doc_labels[room:]) if overflow == "carry" else ([], [])
            doc_cols = {name: values[room:] for name, values in doc_cols.items()}
    flush()
    return rows


def pack_dataset_batch(
    batch: dict[str, list[Any]], max_length: int, overflow: str = "discard", columns: tuple[str, ...] = ()
) -> dict[str, list]:
    """``Dataset.map(batched=True, remove_columns=...)`` wrapper of :func:`pack_documents`.

    Reads ``input_ids``, if present ``labels``, and the per-token ``columns``; packing restarts at every map
    batch, so a large ``batch_size`` wastes less of the last row.
    """
    return pack_documents(
        batch["input_ids"],
        max_length,
        batch.get("labels"),
        overflow=overflow,
        columns={name: batch[name] for name in columns},
    )


def special_token_ids(tokenizer, add_bos: bool = True, add_eos: bool = True) -> tuple[list[int], list[int]]:
    """``([BOS], [EOS])`` of ``tokenizer`` (each empty when the tokenizer has no such token or it is not added)."""
    bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    return bos, eos


def document_token_ids(
    tokenizer, texts: Sequence[str], add_bos: bool = True, add_eos: bool = True
) -> list[list[int]]:
    """``BOS + tokens(text) + EOS`` per document, the text tokenised without special tokens.

    This is the one document encoding of pretraining-style data in hf-select (SLM, OPUS, MeCo's plain
    documents, reference losses and the demo students), so that losses computed by one piece of code line up
    token for token with rows trained by another.
    """
    bos, eos = special_token_ids(tokenizer, add_bos, add_eos)
    return [bos + list(ids) + eos for ids in tokenizer(list(texts), add_special_tokens=False).input_ids]


def tokenize_documents(
    dataset, tokenizer, text_column: str = "text", *, remove_columns: bool = False, **map_kwargs: Any
):
    """``dataset`` with ``input_ids`` (:func:`document_token_ids`) added through ``Dataset.map``.

    ``remove_columns`` drops every other column; ``map_kwargs`` go to ``Dataset.map`` (``keep_in_memory``,
    ``num_proc``, ...).
    """
    if text_column not in dataset.column_names:
        raise ValueError(f"no {text_column!r} column to tokenise in {dataset.column_names}")

    def encode(batch):
        return {"input_ids": document_token_ids(tokenizer, batch[text_column])}

    removed = dataset.column_names if remove_columns else None
    return dataset.map(encode, batched=True, remove_columns=removed, desc="tokenize", **map_kwargs)


def pack_dataset(
    dataset,
    max_length: int,
    overflow: str = "discard",
    columns: tuple[str, ...] = (),
    keep: tuple[str, ...] = (),
    group_column: str | None = None,
    **map_kwargs: Any,
):
    """Document-masked packed rows of a tokenised ``dataset`` (``input_ids`` and optionally ``labels``).

    ``keep`` names row-level columns to drop *not* (they must then be constant per packed row, e.g. with
    ``group_column``); ``group_column`` packs each value's documents into rows of their own and keeps the
    value as a column (OPUS packs one domain per row). ``columns`` are per-token columns packed alongside.
    """
    if group_column is not None and group_column not in dataset.column_names:
        group_column = None

    def pack(batch):
        if group_column is None:
            return pack_dataset_batch(batch, max_length, overflow, columns)
        out: dict[str, list] = {}
        for value in sorted(set(batch[group_column]), key=str):
            chosen = [i for i, v in enumerate(batch[group_column]) if v == value]
            sub = {name: [batch[name][i] for i in chosen] for name in ("input_ids", "labels", *columns) if name in batch}
            rows = pack_dataset_batch(sub, max_length, overflow, columns)
            rows[group_column] = [str(value)] * len(rows["input_ids"])
            for key, values in rows.items():
                out.setdefault(key, []).extend(values)
        return out

    keep = (*keep, group_column) if group_column else keep
    drop = [c for c in dataset.column_names if c not in keep]
    return dataset.map(pack, batched=True, batch_size=1000, remove_columns=drop, desc="pack", **map_kwargs)


@dataclass
class PackedCollator:
    """Pads packed rows into a batch that keeps documents apart.

    Returns ``input_ids``, ``labels`` and ``position_ids`` and *no* ``attention_mask`` (transformers then builds
    the block-diagonal mask from the positions). Padding gets position 0 (a singleton segment nobody attends to)
    and label -100. Extra per-token columns listed in ``pad_columns`` (e.g. ``ref_loss``) are padded with
    ``pad_values``.

    The batch also carries ``use_cache=False`` (default) so that it can go straight into ``model(**batch)``
    (e.g. in a ``Trainer``): a model whose config has ``use_cache=True`` otherwise creates a KV cache even in
    training mode, transformers then skips the packed-sequence detection and the documents of a row attend to
    each other. ``use_cache=None`` leaves the key out (for code that calls the model with explicit arguments).
    """

    pad_token_id: int = 0
    pad_to_multiple_of: int | None = None
    pad_columns: tuple[str, ...] = ()
    pad_value: float = 0.0
    use_cache: bool | None = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of

        def pad(key, value, dtype):
            return torch.tensor(
                [list(f[key]) + [value] * (length - len(f[key])) for f in features], dtype=dtype
            )

        batch = {
            "input_ids": pad("input_ids", self.pad_token_id, torch.long),
            "labels": pad("labels", IGNORE_INDEX, torch.long),
            "position_ids": pad("position_ids", 0, torch.long),
        }
        for key in self.pad_columns:
            batch[key] = pad(key, self.pad_value, torch.float32)
        if self.use_cache is not None:
            batch["use_cache"] = self.use_cache
        return batch
