"""OPUS: dynamic in-training batch selection by optimizer-shaped utility against a proxy set (arXiv 2602.05400).

Each optimizer step the trainer loads a buffer of candidate rows (``OPUSConfig.candidates_per_device``),
scores a random ``score_window``-token window of each together with a fresh proxy batch in one joint
forward/backward (eval mode, the plain model outside DDP / torch.compile, no gradient checkpointing, gradients
w.r.t. block Linear outputs only), turns the per-sample layer gradients into the updates the optimizer would
apply (state frozen at the start of the step), and keeps ``per_device_train_batch_size`` rows by Boltzmann
sampling without replacement with a redundancy penalty (``selection="boltzmann"``), greedily with the penalty
(``"greedy"``) or by the largest alignments (``"topk"``). The per-layer statistics are taken inside the
scoring backward pass (``sketch_in_backward``); large layers are compressed with a TensorSketch
(``sketch_kind``, error independent of the update's rank). The normal training step then runs on
the kept rows, so update tokens equal a plain run with the same batch size.

Random streams: every rank draws the same proxy rows (a generator seeded by ``(seed, step, micro-batch)``),
so the target gradient is identical on all ranks with no communication; each rank then draws its windows and
selects from its own candidate shard with a generator seeded by ``(seed, step, micro-batch, rank)``. Each
gradient-accumulation micro-batch of a step has its own streams (fresh proxy rows, fresh windows), and each
rank's choice is a deterministic function of its buffer, the model, the step and the micro-batch index.

Every forward pass (scoring and training) runs with ``use_cache=False``: with a user collator that does not
set it, a model whose config has ``use_cache=True`` would otherwise build a KV cache, and on some attention
paths packed documents would attend to each other.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict

import torch
from transformers import Trainer
from transformers.utils import logging

from hf_select.opus.alignment import (
    block_linear_layers,
    build_preconditioners,
    candidate_statistics,
    layer_gradients,
    opus_row_window,
    resolve_preconditioner,
    scored_statistics,
    select_candidates,
)
from hf_select.opus.sketch import make_sketch
from hf_select.packing import PackedCollator
from hf_select.token_loss import IGNORE_INDEX

from .opus_config import OPUSConfig
from .resume import ResumableTrainerMixin
from .sharding import check_parallelism

logger = logging.get_logger(__name__)

DOMAIN_KEY = "opus_domain"


class _DomainCollator:
    """Wraps a collator and passes each row's ``domain`` (if any) through as a list under ``opus_domain``."""

    def __init__(self, inner, column: str = "domain"):
        self.inner, self.column = inner, column

    def __call__(self, features):
        domains = [f.get(self.column) for f in features] if self.column in features[0] else None
        stripped = [{k: v for k, v in f.items() if k != self.column} for f in features]
        batch = self.inner(stripped)
        if domains is not None:
            batch[DOMAIN_KEY] = [str(d) for d in domains]
        return batch


def _row_tensors(row: dict) -> tuple[list[int], list[int], list[int]]:
    ids = list(row["input_ids"])
    labels = list(row["labels"]) if row.get("labels") is not None else [IGNORE_INDEX, *ids[1:]]
    pos = list(row["position_ids"]) if row.get("position_ids") is not None else list(range(len(ids)))
    return ids, labels, pos


class OPUSTrainer(ResumableTrainerMixin, Trainer):
    """``transformers.Trainer`` that selects each step's rows with OPUS (see the module docstring).

    Args:
        proxy_dataset: rows of the target ("proxy") set: ``input_ids`` and optionally ``labels`` /
            ``position_ids`` (e.g. packed rows of :func:`hf_select.build_proxy_pool` documents). Required.
        Other arguments as ``transformers.Trainer``; ``data_collator`` defaults to
        :class:`~hf_select.PackedCollator`, and rows may carry a ``domain`` column for the logs.

    Attributes:
        opus_timings: seconds spent in scoring forward/backward, sketch + inner products and selection.
        opus_history: one dict per scored micro-batch (step, micro-batch index, raw alignments, utility spread,
            ESS, selected indices, selected domains, seconds, and whether the preconditioner was sharded (FSDP):
            then every rank scored all ranks' candidates on its rows, see :meth:`_candidates_of_all_ranks`).
    """

    def __init__(self, model=None, args: OPUSConfig | None = None, *, proxy_dataset=None, **kwargs):
        if args is None or not isinstance(args, OPUSConfig):
            raise TypeError("OPUSTrainer needs args=OPUSConfig(...)")
        if proxy_dataset is None or len(proxy_dataset) == 0:
            raise ValueError(
                "OPUS needs a non-empty proxy_dataset (rows of the target set); got an empty one"
            )
        rows = [_row_tensors(proxy_dataset[i]) for i in range(len(proxy_dataset))]
        rows = [r for r in rows if sum(label != IGNORE_INDEX for label in r[1][1:]) > 0]
        if not rows:
            raise ValueError("every proxy row is shorter than 2 tokens or fully masked: empty proxy set")
        self.proxy_rows = rows
        processing_class = kwargs.get("processing_class")
        if kwargs.get("data_collator") is None:
            pad = getattr(processing_class, "pad_token_id", None) or 0
            kwargs["data_collator"] = PackedCollator(pad_token_id=pad)
        kwargs["data_collator"] = _DomainCollator(kwargs["data_collator"])
        super().__init__(model=model, args=args, **kwargs)
        check_parallelism(self, "OPUSTrainer")
        self._opus_layers = None
        self._opus_sketches = None
        self._opus_kind = None
        self.opus_timings: dict[str, float] = defaultdict(float)
        self.opus_clock = time.perf_counter  # benchmarks on a shared machine may use time.process_time
        self.opus_history: list[dict] = []
        self._opus_pending: list[dict] = []

    # ---------------------------------------------------------------------------------------- data
    def get_train_dataloader(self):
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        return self._get_dataloader(
            dataset=self.train_dataset,
            description="Training",
            batch_size=self.args.candidates_per_device,
            sampler_fn=self._get_train_sampler,
            is_training=True,
        )

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches = list(itertools.islice(epoch_iterator, num_batches))
        selected = [self.opus_select(batch, micro_batch=i) for i, batch in enumerate(batches)]
        return selected, self._get_num_items_in_batch(selected, device)

    # ------------------------------------------------------------------------------------ selection
    def _setup_opus(self, model):
        self._opus_layers = block_linear_layers(model)
        self._opus_kind = resolve_preconditioner(self.optimizer, self.args.preconditioner)
        if self.is_fsdp_enabled and self._opus_kind == "muon":
            raise ValueError(
                "OPUS's Muon preconditioner is not supported under FSDP: it orthogonalises the whole momentum "
                "matrix of each layer, which FSDP shards across ranks, and a sharded form is not implemented or "
                "tested. Use AdamW or SGD with FSDP, or Muon with DDP"
            )
        dim = self.args.sketch_dim
        device = next(model.parameters()).device
        self._opus_sketches = {
            layer.name: make_sketch(
                self.args.sketch_kind, *layer.sketch_shape, dim, seed=self.args.seed + i, device=device
            )
            for i, layer in enumerate(self._opus_layers)
            if dim is not None and layer.weight.numel() > dim
        }
        logger.info(
            f"OPUS: {len(self._opus_layers)} block Linear layers, preconditioner={self._opus_kind}, "
            f"{len(self._opus_sketches)} sketched ({self.args.sketch_kind}, dim {dim}), buffer {self.args.candidates_per_device} -> "
            f"{self.args.per_device_train_batch_size}"
        )

    def _proxy_rows(
        self, step: int, window: int, micro_batch: int = 0
    ) -> list[tuple[list[int], list[int], list[int]]]:
        # same on every rank; a fresh stream per step and per gradient-accumulation micro-batch
        gen = torch.Generator().manual_seed((self.args.seed * 7919 + step) * 131 + micro_batch)
        picks = torch.randint(len(self.proxy_rows), (self.args.proxy_batch_size,), generator=gen).tolist()
        out = []
        for i in picks:
            ids, labels, pos = self.proxy_rows[i]
            room = max(0, len(ids) - window)
            start = int(torch.randint(room + 1, (1,), generator=gen)) if room else 0
            out.append(
                (ids[start : start + window], labels[start : start + window], pos[start : start + window])
            )
        return out

    def _joint_batch(self, batch, step: int, gen: torch.Generator, micro_batch: int = 0):
        ids, labels = batch["input_ids"], batch["labels"]
        pos = batch.get("position_ids")
        if pos is None:
            pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        window = min(self.args.score_window, ids.shape[1])
        starts = opus_row_window(labels.cpu(), window, gen)
        index = torch.tensor(starts)[:, None] + torch.arange(window)[None]
        index = index.to(ids.device)
        cand = [t.gather(1, index) for t in (ids, labels, pos)]
        proxy = self._proxy_rows(step, window, micro_batch)
        pad = torch.zeros(len(proxy), window, dtype=torch.long)
        p_ids, p_labels, p_pos = pad.clone(), pad.clone().fill_(IGNORE_INDEX), pad.clone()
        for r, (a, b, c) in enumerate(proxy):
            p_ids[r, : len(a)], p_labels[r, : len(b)], p_pos[r, : len(c)] = (
                torch.tensor(v) for v in (a, b, c)
            )
        cand[1][:, 0] = IGNORE_INDEX  # the window's first token has no context inside the window
        p_labels[:, 0] = IGNORE_INDEX
        return [torch.cat([c, p.to(c.device)]) for c, p in zip(cand, (p_ids, p_labels, p_pos))]

    def _candidates_of_all_ranks(self, ids, labels, pos, n: int):
        """The joint batch with every rank's candidate windows (rank order) before the shared proxy rows.

        Under FSDP the AdamW second moments are sharded: a rank holds rows ``[a, b)`` of each layer's
        preconditioner, so it can compute only that part of each update ``u_i``, for every candidate of every
        rank. Each rank scores the candidates of all ranks (the scoring forward/backward grows with the world
        size; the inner-product work is split by rows) and :meth:`_complete_sharded_statistics` sums the parts.
        Returns the joint tensors and the offset of this rank's candidates.
        """
        import torch.nn.functional as F

        sizes = self.accelerator.gather(torch.tensor([[n, ids.shape[1]]], device=ids.device))
        if bool((sizes[:, 0] != n).any()):
            raise ValueError(
                f"OPUS under FSDP scores every rank's candidates together and needs the same number of candidates "
                f"per micro-batch on every rank, got {sizes[:, 0].tolist()} (set dataloader_drop_last=True)"
            )
        length = int(sizes[:, 1].max())
        fills = (0, IGNORE_INDEX, 0)
        out = []
        for tensor, fill in zip((ids, labels, pos), fills):
            tensor = F.pad(tensor, (0, length - tensor.shape[1]), value=fill)
            out.append(torch.cat([self.accelerator.gather(tensor[:n].contiguous()), tensor[n:]]))
        return (*out, self.args.process_index * n)

    def _complete_sharded_statistics(self, stats, offset: int, n: int):
        """Sum the ranks' parts of the alignments and the Gram matrix (one all-reduce) and keep this rank's
        candidates."""
        import torch.distributed as dist

        total, device = stats.alignment.numel(), stats.alignment.device
        flat = torch.cat([stats.alignment, stats.gram.flatten()]).to(self.args.device)
        dist.all_reduce(flat)
        alignment, gram = flat[:total].to(device), flat[total:].view(total, total).to(device)
        keep = slice(offset, offset + n)
        stats.alignment, stats.gram = alignment[keep].clone(), gram[keep, keep].clone()
        if stats.row_losses is not None:
            stats.row_losses = stats.row_losses[keep]
        return stats

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(
            model, {**inputs, "use_cache": False}, return_outputs, num_items_in_batch=num_items_in_batch
        )

    @torch.no_grad()
    def opus_select(self, batch: dict, micro_batch: int = 0) -> dict:
        """Score a candidate batch and return the kept rows (same keys, ``per_device_train_batch_size`` rows).

        ``micro_batch`` is the gradient-accumulation index inside the step: it seeds the proxy rows, the
        windows and the sampling, so the micro-batches of one step do not share a random stream.
        """
        domains = batch.pop(DOMAIN_KEY, None)
        n = batch["input_ids"].shape[0]
        k = min(self.args.per_device_train_batch_size, n)
        from hf_select.model_adapter import unwrap_model

        model = unwrap_model(self.model)
        if self._opus_layers is None:
            self._setup_opus(model)
        step = self.state.global_step
        rank = self.args.process_index
        gen = torch.Generator().manual_seed(
            ((self.args.seed * 1_000_003 + step) * 131 + micro_batch) * 1009 + rank
        )
        was_training = model.training
        model.eval()
        try:
            t0 = self.opus_clock()
            pre = build_preconditioners(
                self.optimizer,
                self._opus_layers,
                self._opus_kind,
                steps_taken=step,
                muon_linearization=self.args.muon_linearization,
            )
            ids, labels, pos = self._joint_batch(batch, step, gen, micro_batch)
            sharded = any(p is not None and p.block is not None for p in pre.values())
            scored, offset = n, 0
            if sharded:
                ids, labels, pos, offset = self._candidates_of_all_ranks(ids, labels, pos, n)
                scored = n * self.accelerator.num_processes
                if self.args.process_index != 0:  # unsharded layers: counted once, on rank 0
                    pre = {name: p if p is None or p.block is not None else None for name, p in pre.items()}
            options = dict(
                sketches=self._opus_sketches,
                rank_one_sketch=self.args.sketch_rank_one_adamw,
                gram_weight=self.args.gram_weight,
                exact_elements=self.args.exact_inner_product_elements,
            )
            if self.args.sketch_in_backward:
                stats = scored_statistics(
                    model, self._opus_layers, ids, labels, pos, scored, pre, clock=self.opus_clock, **options
                )
                t2 = self.opus_clock()
                t1 = t2 - stats.per_layer_seconds["sketch_and_inner_products"]
            else:
                grads = layer_gradients(model, self._opus_layers, ids, labels, pos, scored)
                t1 = self.opus_clock()
                stats = candidate_statistics(grads, self._opus_layers, pre, scored, **options)
                del grads
                t2 = self.opus_clock()
            if sharded:
                stats = self._complete_sharded_statistics(stats, offset, n)
            sel = select_candidates(
                stats.alignment,
                stats.gram,
                k,
                temperature=self.args.temperature,
                redundancy_weight=self.args.redundancy_weight,
                standardize=self.args.standardize,
                selection=self.args.selection,
                generator=gen,
            )
            t3 = self.opus_clock()
        finally:
            model.train(was_training)
        self.opus_timings["scoring_forward_backward"] += t1 - t0
        self.opus_timings["sketch_and_inner_products"] += t2 - t1
        self.opus_timings["selection"] += t3 - t2
        index = torch.tensor(sel.indices, device=batch["input_ids"].device)
        kept = {
            key: value.index_select(0, index) if torch.is_tensor(value) and value.shape[:1] == (n,) else value
            for key, value in batch.items()
        }
        record = {
            "step": step,
            "micro_batch": micro_batch,
            "alignment": stats.alignment.tolist(),
            "utility_spread": sel.utility_spread,
            "effective_sample_size": sel.effective_sample_size,
            "selected": sel.indices,
            "sharded_preconditioner": sharded,
            "seconds": {
                "scoring_forward_backward": t1 - t0,
                "sketch_and_inner_products": t2 - t1,
                "selection": t3 - t2,
            },
        }
        if domains is not None:
            record["selected_domains"] = [domains[i] for i in sel.indices]
            record["candidate_domains"] = domains
        self.opus_history.append(record)
        self._opus_pending.append(record)
        return kept

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._opus_pending and "loss" in logs:
            pending, self._opus_pending = self._opus_pending, []
            logs["opus_utility_spread"] = sum(r["utility_spread"] for r in pending) / len(pending)
            logs["opus_ess"] = sum(r["effective_sample_size"] for r in pending) / len(pending)
            if self.args.opus_log_domains:
                # selected share against the share offered in the candidate buffers of the same steps; a
                # domain offered but never picked is logged as 0
                chosen = Counter(d for r in pending for d in r.get("selected_domains", []))
                offered = Counter(d for r in pending for d in r.get("candidate_domains", []))
                total, total_offered = sum(chosen.values()), sum(offered.values())
                if total and total_offered:
                    for domain in sorted(set(offered) | set(chosen)):
                        logs[f"opus_share_{domain}"] = round(chosen[domain] / total, 4)
                        logs[f"opus_offered_{domain}"] = round(offered[domain] / total_offered, 4)
        super().log(logs, *args, **kwargs)


def selected_domain_shares(history: list[dict]) -> dict[str, dict[str, float]]:
    """Share of each domain among the selected rows and among all candidates over a run's history."""
    chosen = Counter(d for r in history for d in r.get("selected_domains", []))
    offered = Counter(d for r in history for d in r.get("candidate_domains", []))
    total_c, total_o = max(1, sum(chosen.values())), max(1, sum(offered.values()))
    return {
        domain: {"selected": chosen[domain] / total_c, "candidates": offered[domain] / total_o}
        for domain in sorted(offered)
    }
