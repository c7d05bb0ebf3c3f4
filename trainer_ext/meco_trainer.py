"""MeCo in one Trainer run: metadata conditioning, then a cooldown on plain documents (arXiv 2501.01956).

The official recipe trains 36k steps on URL-conditioned documents, then restarts from the 36k checkpoint on a
disjoint pool of plain documents. Restarting a ``Trainer`` on a new dataset makes its resume logic skip the
first 36k batches *of the new data*. Here the two phases are one run: the training dataset is a fixed
*schedule* in which row ``i`` is the ``i``-th row the run consumes (rows ``[k * B, (k + 1) * B)`` form optimizer
step ``k``, ``B`` the global batch). The first ``conditioned_steps`` steps draw from the conditioned pool, the
rest from the cooldown pool, and a sequential sampler reads the schedule in order. Model, optimizer state, LR
schedule position and step count simply continue across the switch; on resume the Trainer's ordinary
skip-first-batches lands exactly on the next unseen step of the right phase (before or after the switch).
Because the schedule is a ``datasets.Dataset`` read by index, dataloader workers and data-parallel ranks
(accelerate shards the batches of the sequential sampler) see the same order.

A pool with fewer rows than its phase needs is cycled, each pass in a fresh seeded order (logged).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import Trainer
from transformers.utils import logging

from hf_select.meco.metadata import add_metadata_tokens
from hf_select.packing import PackedCollator, pack_dataset

from .meco_config import MeCoConfig
from .resume import ResumableTrainerMixin

logger = logging.get_logger(__name__)

ROW_COLUMNS = ("input_ids", "labels", "position_ids")


def split_cooldown_pool(documents, fraction: float, seed: int = 0):
    """Split documents into disjoint ``(conditioning, cooldown)`` pools, ``fraction`` of them for the cooldown."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the cooldown pool fraction must be in (0, 1), got {fraction}")
    if len(documents) < 2:
        raise ValueError(f"need at least 2 documents to split off a cooldown pool, got {len(documents)}")
    parts = documents.train_test_split(test_size=fraction, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def packed_pool(documents, tokenizer, args: MeCoConfig, conditioned: bool):
    """Packed rows of one pool. Accepts packed rows (kept), tokenised documents (packed) or raw documents
    (tokenised with the metadata prefix when ``conditioned``, plainly otherwise, then packed)."""
    columns = documents.column_names
    if "input_ids" in columns and "position_ids" in columns:
        return documents
    if "input_ids" not in columns:
        if tokenizer is None:
            raise ValueError("MeCoTrainer needs processing_class (a tokenizer) to tokenise raw documents")
        documents = add_metadata_tokens(
            documents,
            tokenizer,
            metadata_column=args.metadata_column if conditioned else None,
            mode=args.metadata_mode,
            name=args.metadata_name,
            template=args.metadata_template,
            text_column=args.text_column,
            invalid_metadata=args.invalid_metadata,
        )
    return pack_dataset(documents, args.max_length, overflow=args.packing_overflow)


def cycled_order(pool_size: int, num_rows: int, seed: int, what: str = "pool") -> np.ndarray:
    """``num_rows`` indices into a pool of ``pool_size`` rows: seeded permutations, a fresh one per pass."""
    if num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    if pool_size == 0:
        raise ValueError(f"the {what} has no rows but the schedule needs {num_rows}")
    passes = -(-num_rows // pool_size)
    if passes > 1:
        logger.warning(f"MeCo: the {what} ({pool_size} rows) is repeated {num_rows / pool_size:.2f} times")
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(pool_size) for _ in range(passes)])[:num_rows]


def meco_schedule(conditioned, cooldown, conditioned_rows: int, cooldown_rows: int, seed: int = 0):
    """The run's rows in consumption order: ``conditioned_rows`` from ``conditioned`` then ``cooldown_rows``
    from ``cooldown`` (columns ``input_ids, labels, position_ids`` plus ``meco_cooldown`` 0/1)."""
    parts, order, features = [], [], None
    for phase, (pool, rows, what) in enumerate(
        [(conditioned, conditioned_rows, "conditioning pool"), (cooldown, cooldown_rows, "cooldown pool")]
    ):
        if rows == 0:
            continue
        if pool is None:
            raise ValueError(f"the {what} is missing but the schedule needs {rows} rows from it")
        missing = [c for c in ROW_COLUMNS if c not in pool.column_names]
        if missing:
            raise ValueError(f"the {what} lacks packed-row column(s) {missing}")
        pool = pool.select_columns(list(ROW_COLUMNS))
        if features is not None and pool.features != features:
            pool = pool.cast(features)
        features = pool.features
        offset = sum(len(p) for p in parts)
        order.append(cycled_order(len(pool), rows, seed + phase, what) + offset)
        parts.append(pool.add_column("meco_cooldown", [phase] * len(pool)))
    from datasets import concatenate_datasets

    rows_all = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return rows_all.select(np.concatenate(order))


class MeCoTrainer(ResumableTrainerMixin, Trainer):
    """``Trainer`` for MeCo: the first ``args.conditioned_steps()`` optimizer steps train on documents
    prefixed with their metadata (labels ``-100`` on the prefix), the remaining steps on plain documents from a
    disjoint pool, in one run (see the module docstring).

    Args:
        model: the causal LM to train.
        args: a :class:`MeCoConfig` with ``max_steps`` set.
        train_dataset: documents for the conditioning phase -- raw (``text`` + metadata column), tokenised
            (``input_ids``/``labels`` with the prefix already inside) or packed rows (plus ``position_ids``).
            Without ``cooldown_dataset``, raw documents are first split into two disjoint pools.
        cooldown_dataset: documents for the cooldown phase (raw ``text``, tokenised or packed); must not overlap
            ``train_dataset``.
        data_collator: defaults to :class:`hf_select.packing.PackedCollator` (no attention mask, so documents
            never attend to each other on sdpa/eager). Every forward pass runs with ``use_cache=False``: with
            a KV cache transformers skips the packed-sequence detection and documents would leak.
        processing_class: the tokenizer (needed for raw documents).
        **kwargs: passed on to ``Trainer``.
    """

    def __init__(
        self,
        model=None,
        args: MeCoConfig | None = None,
        train_dataset=None,
        cooldown_dataset=None,
        data_collator=None,
        processing_class=None,
        **kwargs,
    ):
        if not isinstance(args, MeCoConfig):
            raise TypeError(f"MeCoTrainer needs a MeCoConfig as args, got {type(args).__name__}")
        if train_dataset is None:
            raise ValueError("MeCoTrainer needs a train_dataset (the conditioning documents)")
        if not hasattr(train_dataset, "column_names") or not hasattr(train_dataset, "__len__"):
            raise TypeError("MeCoTrainer needs map-style datasets.Dataset pools (no IterableDataset)")
        self.conditioned_steps = args.conditioned_steps()
        seed = args.data_seed if args.data_seed is not None else args.seed
        cooldown_steps = args.max_steps - self.conditioned_steps
        if cooldown_dataset is None and cooldown_steps > 0:
            if "input_ids" in train_dataset.column_names:
                raise ValueError("pass cooldown_dataset when train_dataset is already tokenised or packed")
            train_dataset, cooldown_dataset = split_cooldown_pool(
                train_dataset, args.cooldown_pool_fraction or args.cooldown_fraction, seed
            )
        conditioned = packed_pool(train_dataset, processing_class, args, conditioned=True)
        cooldown = (
            packed_pool(cooldown_dataset, processing_class, args, conditioned=False)
            if cooldown_steps > 0
            else None
        )
        global_batch = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        schedule = meco_schedule(
            conditioned,
            cooldown,
            self.conditioned_steps * global_batch,
            cooldown_steps * global_batch,
            seed,
        )
        if data_collator is None:
            pad = getattr(processing_class, "pad_token_id", None)
            data_collator = PackedCollator(pad_token_id=pad if pad is not None else 0)
        logger.info(
            f"MeCo: {self.conditioned_steps} conditioned steps, then {cooldown_steps} cooldown steps "
            f"({global_batch} rows per step)"
        )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=schedule,
            processing_class=processing_class,
            **kwargs,
        )

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler:
        # The schedule is already in consumption order; shuffling would mix the two phases.
        return torch.utils.data.SequentialSampler(
            train_dataset if train_dataset is not None else self.train_dataset
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(
            model, {**inputs, "use_cache": False}, return_outputs, num_items_in_batch=num_items_in_batch
        )

    def in_cooldown(self, step: int) -> bool:
        """Whether optimizer step ``step`` (1-based, as ``state.global_step`` after it) trains on plain data."""
        return step > self.conditioned_steps

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            logs["meco_cooldown"] = float(self.in_cooldown(self.state.global_step))
        super().log(logs, *args, **kwargs)
