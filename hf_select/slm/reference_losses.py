"""Reference-model losses for RHO-1 Selective Language Modeling (Lin et al., arXiv 2404.07965).

``ref_loss[t]`` is the reference model's cross-entropy of predicting token ``t`` of a row (aligned with the
row's ``input_ids`` and ``labels``, HF convention: not shifted), ``0.0`` where nothing is predicted (first token
of every packed document, ``-100`` labels, padding). The losses are computed on exactly the rows the trainer
will see -- the same tokenisation, packing boundaries, sequence length and document masking -- because a
token's loss depends on its context: precompute on the *packed* dataset, not on documents.

Storage: ``float32`` by default (4 bytes per token, bit-compatible with the online reference up to kernel
noise); ``float16`` halves the storage at a relative rounding error of about 5e-4, which only reorders tokens
whose excess losses are that close.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from ..logit_head import softcap_logits
from ..packing import PackedCollator
from ..token_loss import final_hidden_states, per_token_loss, prepare_model_inputs, split_causal_lm

STORAGE_DTYPES = ("float32", "float16", "bfloat16")


def token_entropy(
    hidden: torch.Tensor, head: nn.Module, softcap: float | None, chunk_size: int
) -> torch.Tensor:
    """Float32 next-token entropy ``-sum_v p log p`` from hidden states ``[N, E]``, in chunks."""
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_size):
        logits = softcap_logits(head(hidden[start : start + chunk_size]).float(), softcap)
        logp = F.log_softmax(logits, dim=-1)
        out[start : start + chunk_size] = -(logp.exp() * logp).sum(-1)
    return out


def reference_token_stats(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    with_entropy: bool = False,
    chunk_size: int = 2048,
) -> dict[str, torch.Tensor]:
    """Per-token ``ref_loss`` (and ``ref_entropy`` of the distribution that predicts the token) ``[batch, seq]``
    float32, plus the prediction ``mask``; one backbone forward, no gradients."""
    model_inputs, _ = prepare_model_inputs(input_ids, attention_mask, position_ids, model)
    with torch.no_grad():
        hidden = final_hidden_states(model, **model_inputs)
        losses, mask = per_token_loss(
            model, input_ids, attention_mask, position_ids, labels, chunk_size, hidden_states=hidden
        )
        out = {"ref_loss": losses, "mask": mask}
        if with_entropy:
            _, head, softcap = split_causal_lm(model)
            rows, cols = mask.nonzero(as_tuple=True)
            entropy = torch.zeros_like(losses)
            entropy[rows, cols] = token_entropy(hidden[rows, cols - 1], head, softcap, chunk_size)
            out["ref_entropy"] = entropy
    return out


def reference_batch(batch, model, pad_token_id, with_entropy, chunk_size, dtype):
    """Reference losses of one batch of packed rows (``input_ids``, ``labels``, ``position_ids`` lists): the
    per-batch function of :func:`reference_loss_function` and of the datatrove ``ReferenceLossScorer``."""
    lengths = [len(ids) for ids in batch["input_ids"]]
    features = []
    for i, length in enumerate(lengths):
        row = {"input_ids": batch["input_ids"][i]}
        row["labels"] = batch["labels"][i] if "labels" in batch else batch["input_ids"][i]
        row["position_ids"] = batch["position_ids"][i] if "position_ids" in batch else list(range(length))
        features.append(row)
    padded = PackedCollator(pad_token_id=pad_token_id, use_cache=None)(features)
    device = next(model.parameters()).device
    padded = {k: v.to(device) for k, v in padded.items()}
    stats = reference_token_stats(model, with_entropy=with_entropy, chunk_size=chunk_size, **padded)
    columns = ("ref_loss", "ref_entropy") if with_entropy else ("ref_loss",)
    return {
        name: [stats[name][i, :n].to(dtype).float().tolist() for i, n in enumerate(lengths)]
        for name in columns
    }


def reference_loss_function(
    ref_model: nn.Module,
    pad_token_id: int = 0,
    with_entropy: bool = False,
    storage_dtype: str = "float32",
    chunk_size: int = 2048,
):
    """The batched ``Dataset.map`` function behind :func:`compute_reference_losses` (rows -> ``ref_loss``
    [+ ``ref_entropy``], rounded to ``storage_dtype``), for :func:`hf_select.sharded_map.sharded_map`."""
    import functools

    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {STORAGE_DTYPES}, got {storage_dtype!r}")
    return functools.partial(
        reference_batch,
        model=ref_model,
        pad_token_id=pad_token_id,
        with_entropy=with_entropy,
        chunk_size=chunk_size,
        dtype=getattr(torch, storage_dtype),
    )


def cast_reference_columns(dataset, storage_dtype: str = "float32"):
    """Store ``ref_loss`` / ``ref_entropy`` as ``storage_dtype`` (bfloat16 as float32: arrow has none)."""
    from datasets import Sequence, Value

    stored = "float32" if storage_dtype == "bfloat16" else storage_dtype
    for name in ("ref_loss", "ref_entropy"):
        if name in dataset.column_names:
            dataset = dataset.cast_column(name, Sequence(Value(stored)))
    return dataset


def compute_reference_losses(
    dataset,
    ref_model: nn.Module,
    batch_size: int = 8,
    pad_token_id: int = 0,
    with_entropy: bool = False,
    storage_dtype: str = "float32",
    chunk_size: int = 2048,
    model_id: str | None = None,
    num_proc: int | None = None,
):
    """Add a ``ref_loss`` column (and ``ref_entropy`` with ``with_entropy``) to a dataset of training rows.

    Args:
        dataset: a ``datasets.Dataset`` of the rows the trainer will see: ``input_ids`` and optionally
            ``labels`` and ``position_ids`` (packed rows from :func:`hf_select.pack_documents`). Rows without
            ``position_ids`` are single documents.
        ref_model: the reference causal LM (same tokenizer as the rows); run in eval mode without gradients.
        batch_size: rows per forward pass (padding never changes a row's losses).
        pad_token_id: id used for padding inside a forward batch.
        with_entropy: also write ``ref_entropy`` (next-token entropy, for the self-reference score).
        storage_dtype: ``float32`` (default), ``float16`` or ``bfloat16``: values are rounded to it, and the
            column is stored as it (see the module docstring).
        chunk_size: predicted tokens projected through the LM head at once.
        model_id: identifies the reference in the cache fingerprint (default: its ``name_or_path``).
        num_proc: ``Dataset.map`` processes (CPU only).

    Returns:
        The dataset with the new column(s), one float per token, aligned with ``input_ids``.
    """
    from datasets import Sequence, Value

    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {STORAGE_DTYPES}, got {storage_dtype!r}")
    if "input_ids" not in dataset.column_names:
        raise ValueError(f"dataset needs an 'input_ids' column; it has {dataset.column_names}")
    was_training = ref_model.training
    ref_model.eval()
    if (
        model_id is None
    ):  # name plus a cheap weight checksum: two references of one name must not share a cache
        with torch.no_grad():
            checksum = sum(float(p.double().sum()) for p in ref_model.parameters())
        model_id = f"{getattr(ref_model.config, 'name_or_path', '')}:{checksum:.10e}"
    key = f"{dataset._fingerprint}|{model_id}|{with_entropy}|{storage_dtype}|{ref_model.dtype}"
    features = dataset.features.copy()
    stored = "float32" if storage_dtype == "bfloat16" else storage_dtype  # arrow has no bfloat16
    features["ref_loss"] = Sequence(Value(stored))
    if with_entropy:
        features["ref_entropy"] = Sequence(Value(stored))
    try:
        return dataset.map(
            reference_batch,
            batched=True,
            batch_size=batch_size,
            fn_kwargs={
                "model": ref_model,
                "pad_token_id": pad_token_id,
                "with_entropy": with_entropy,
                "chunk_size": chunk_size,
                "dtype": getattr(torch, storage_dtype),
            },
            features=features,
            num_proc=num_proc,
            new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16],
            desc="reference losses",
        )
    finally:
        ref_model.train(was_training)
