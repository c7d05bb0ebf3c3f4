"""RHO-1 Selective Language Modeling as a drop-in ``transformers.Trainer`` (Lin et al., arXiv 2404.07965).

The loss of a step is the mean cross-entropy over the *selected* tokens of the whole step: the tokens with the
highest score (by default the excess loss ``L_student - L_reference``, the student's loss detached for ranking),
``token_select_ratio`` of the trainable tokens of every selection scope. Unselected tokens stay in the input and
in the context; only their loss terms are dropped.

Exact loss scale. The Trainer's ``num_items_in_batch`` counts *all* tokens, so it cannot be the denominator.
Before the first backward of an optimizer step, :meth:`SLMTrainer.get_batch_samples` sees every
gradient-accumulation micro-batch, computes the reference values and the number of tokens the step will select,
summed over micro-batches and processes:

- "sequence" / "microbatch": ``ceil(ratio * n)`` per row / per micro-batch -- known from the labels alone;
- "global": one threshold (the k-th largest score over all micro-batches of all processes; ties at it are kept
  in order of process, micro-batch, row and position, so exactly ``ceil(ratio * n)`` are selected). When the score
  needs the student's loss and the step has several micro-batches, a no-grad forward of the student over the
  micro-batches ranks the tokens first. That forward is the training forward's twin: train mode, and the random
  number generators are rewound after it, so each micro-batch's training forward draws the same dropout masks
  and the ranking reads exactly the losses that are trained. With one micro-batch per step the ranking uses
  the training forward itself and only the scores are exchanged between processes. (With dropout > 0 two
  splits of a batch still draw different masks, as any two runs of plain training do; the selection rule --
  top ``k`` of the trained forward's excess losses -- is the same for every split.)

Each micro-batch then returns ``world_size * sum(selected CE) / total_selected`` (DDP averages gradients), with
``loss_is_scaled_for_ga = True``; ``num_items_in_batch`` and ``average_tokens_across_devices`` are not used (the
selected count is always summed over all processes). Gradient accumulation and data parallelism therefore leave the update
unchanged for the "sequence" and "global" scopes; "microbatch" selection depends on how the batch is split by
definition.

Reference: a ``ref_loss`` column of the dataset (:func:`hf_select.compute_reference_losses`, computed on the
same packed rows; ``NaN`` marks a token without a reference value -- e.g. outside what a cross-tokenizer
reference scored, :mod:`hf_select.slm.cross_tokenizer` -- which is never selected and not counted in any
scope), else an online frozen ``ref_model`` (eval mode, no gradients, one extra forward per micro-batch;
under FSDP2 it is sharded like the student, :func:`~hf_select.trainer_ext.sharding.shard_frozen_model`),
else -- for a peft model -- the base model with the adapter disabled. Evaluation reports the
plain mean cross-entropy over all tokens.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer
from transformers.utils import logging

from hf_select.packing import PackedCollator
from hf_select.slm.reference_losses import reference_token_stats
from hf_select.slm.token_selection import (
    global_cutoff,
    select_by_cutoff,
    select_top_tokens,
    selection_count,
    selective_loss_sum,
)
from hf_select.token_loss import per_token_loss, prediction_mask, prepare_model_inputs

from .resume import ResumableTrainerMixin
from .sharding import check_parallelism, shard_frozen_model
from .slm_config import SLMConfig

logger = logging.get_logger(__name__)

REFERENCE_COLUMNS = ("ref_loss", "ref_entropy")
# keys the trainer adds to a micro-batch between get_batch_samples and compute_loss
_VALID, _TOTAL, _SELECTED, _STUDENT = "slm_valid", "slm_num_selected", "slm_selected", "slm_student_loss"
_STAT_NAMES = ("valid", "selected", "excess_sum", "selected_ce_sum", "unselected_ce_sum", "ref_sum")


PROBE_TEXT = "Hello world! 12345 def f(x):\n    return x ** 2  # naïve café, 日本語"


def check_reference_columns(dataset, columns: tuple[str, ...] = REFERENCE_COLUMNS, chunk: int = 8192) -> None:
    """Check the whole reference column(s) of a map-style dataset before training starts.

    Every row's ``ref_loss`` (and ``ref_entropy``) must have one value per token of ``input_ids`` and no value
    may be infinite or null (``NaN`` is allowed: a token without a reference value, never selected). The error names the *dataset* row, so that a
    corrupted column fails before step 1 rather than at the step that happens to draw the row (or never, in
    a short run). Reads the columns through Arrow in chunks of ``chunk`` rows.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    present = [c for c in columns if c in dataset.column_names]
    if not present or "input_ids" not in dataset.column_names:
        return
    table_view = dataset.select_columns(["input_ids", *present]).with_format("arrow")
    for start in range(0, len(dataset), chunk):
        table = table_view[start : start + chunk]
        n_tokens = pc.list_value_length(table["input_ids"]).to_numpy(zero_copy_only=False)
        for key in present:
            values = table[key]
            lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
            bad = (lengths != n_tokens).nonzero()[0]
            if len(bad):
                row = start + int(bad[0])
                raise ValueError(
                    f"{key} of dataset row {row} has {lengths[bad[0]]} values for {n_tokens[bad[0]]} tokens "
                    f"({len(bad)} rows in {start}..{start + len(table) - 1} mismatch); reference losses must "
                    "be computed on exactly the packed rows used for training (same tokenizer, seq_length "
                    "and --overflow)"
                )
            flat = pc.list_flatten(values)
            if len(flat) == 0:
                continue
            as_float = pc.cast(flat, pa.float64())
            finite = pc.fill_null(pc.or_(pc.is_finite(as_float), pc.is_nan(as_float)), False)
            if not pc.all(finite).as_py():
                first = int(pc.index(finite, False).as_py())
                row = start + int(pc.list_parent_indices(values)[first].as_py())
                value = flat[first].as_py()
                raise ValueError(
                    f"{key} of dataset row {row} holds an infinite or null value ({value}); a broken reference "
                    "model or a corrupted column: recompute it with hf-select reference-losses"
                )


def check_same_tokenizer(student, reference, probe: str = PROBE_TEXT) -> None:
    """Refuse an online reference whose tokenizer differs from the student's (vocabulary and a probe string).

    An online reference scores the student's token ids, so both must mean the same text. A reference with
    another tokenizer needs its losses projected onto the student's tokens first:
    ``hf-select reference-losses --student_tokenizer ...`` (:mod:`hf_select.slm.cross_tokenizer`).
    """
    student_vocab, reference_vocab = student.get_vocab(), reference.get_vocab()
    same_vocab = student_vocab == reference_vocab
    same_probe = (
        student(probe, add_special_tokens=False).input_ids
        == reference(probe, add_special_tokens=False).input_ids
    )
    if not (same_vocab and same_probe):
        what = "vocabularies" if not same_vocab else "encodings of a probe string"
        raise ValueError(
            f"the reference tokenizer ({getattr(reference, 'name_or_path', '?')}, {len(reference_vocab)} tokens) "
            f"differs from the student's ({getattr(student, 'name_or_path', '?')}, {len(student_vocab)} "
            f"tokens): their {what} differ. Precompute cross-tokenizer reference losses with "
            "'hf-select reference-losses --student_tokenizer STUDENT' and train on those rows instead"
        )


def _output_vocab(model: nn.Module) -> int | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    return None if weight is None else int(weight.shape[0])


@dataclass
class SLMCollator(PackedCollator):
    """:class:`~hf_select.PackedCollator` that checks the reference columns of every row.

    Rows without ``labels`` train on every token; rows without ``position_ids`` are one document each.
    """

    pad_columns: tuple[str, ...] = ()

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = []
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            row = {"input_ids": f["input_ids"], "labels": f.get("labels", f["input_ids"])}
            row["position_ids"] = f.get("position_ids", list(range(n)))
            for key in self.pad_columns:
                values = f[key]
                if len(values) != n:
                    raise ValueError(
                        f"{key} length mismatch in row {i}: {len(values)} values for {n} tokens; reference "
                        "losses must be computed on exactly the packed rows used for training"
                    )
                row[key] = values
            rows.append(row)
        batch = super().__call__(rows)
        for key in self.pad_columns:
            if torch.isinf(batch[key]).any():
                raise ValueError(f"{key} contains inf (a broken reference model or a corrupted column)")
        return batch


class SLMTrainer(ResumableTrainerMixin, Trainer):
    """Trainer for RHO-1 Selective Language Modeling (arXiv 2404.07965); see the module docstring.

    Args:
        model: the student causal LM (or a peft model; its adapter-free base is then the default reference).
        args: an :class:`SLMConfig`.
        ref_model: optional frozen reference causal LM with the student's tokenizer. Ignored for batches that
            carry a ``ref_loss`` column.
        ref_tokenizer: the reference's tokenizer; when given with a ``ref_model`` it is compared with
            ``processing_class`` (:func:`check_same_tokenizer`) and a mismatch is refused. Without it, a
            reference whose output vocabulary differs from the student's is refused.
        data_collator: defaults to :class:`SLMCollator` (packed rows, padded reference columns).
        **kwargs: everything else ``transformers.Trainer`` accepts.

    Logged with the training loss: ``slm_selected_share``, ``slm_excess_loss`` (mean over trainable tokens),
    ``slm_loss_selected`` / ``slm_loss_unselected`` (student CE) and ``slm_ref_loss``.
    """

    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: nn.Module | None = None,
        args: SLMConfig | None = None,
        ref_model: nn.Module | None = None,
        data_collator=None,
        train_dataset=None,
        processing_class=None,
        ref_tokenizer=None,
        **kwargs,
    ):
        from datasets import Dataset

        if not isinstance(args, SLMConfig):
            raise TypeError(f"SLMTrainer needs an SLMConfig as args, got {type(args).__name__}")
        if isinstance(train_dataset, Dataset):
            if len(train_dataset) == 0:
                raise ValueError("the training dataset is empty")
            check_reference_columns(train_dataset)
        online = ref_model is not None and "ref_loss" not in (
            getattr(train_dataset, "column_names", None) or []
        )
        if online and ref_tokenizer is not None and processing_class is not None:
            check_same_tokenizer(processing_class, ref_tokenizer)
        elif online and model is not None:
            student_vocab, reference_vocab = _output_vocab(model), _output_vocab(ref_model)
            if None not in (student_vocab, reference_vocab) and student_vocab != reference_vocab:
                raise ValueError(
                    f"the reference model's vocabulary ({reference_vocab}) differs from the student's "
                    f"({student_vocab}): an online reference must share the student's tokenizer. Precompute "
                    "cross-tokenizer reference losses with 'hf-select reference-losses --student_tokenizer'"
                )
        if data_collator is None:
            pad_id = getattr(processing_class, "pad_token_id", None) or 0
            columns = getattr(train_dataset, "column_names", None) or []
            pad_columns = tuple(c for c in REFERENCE_COLUMNS if c in columns)
            data_collator = SLMCollator(pad_token_id=pad_id, pad_columns=pad_columns)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        check_parallelism(self, "SLMTrainer")
        self.ref_model = ref_model
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
            ref_model.to(self.args.device)
            if self.is_fsdp_enabled and online:
                # sharded like the student: no rank keeps a full replica of the reference
                self.ref_model = shard_frozen_model(self, ref_model)
        self._slm_stats = torch.zeros(len(_STAT_NAMES), dtype=torch.float64, device=self.args.device)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns += [c for c in REFERENCE_COLUMNS if c not in self._signature_columns]

    # ---- reference values ---------------------------------------------------------------------------------

    @property
    def _needs_student(self) -> bool:
        return self.args.score == "excess_loss"

    @property
    def _reference_column(self) -> str:
        return "ref_entropy" if self.args.score == "reference_entropy" else "ref_loss"

    def _check_reference(self, batch: dict[str, Any], key: str) -> None:
        values = batch[key]
        if values.shape != batch["input_ids"].shape:
            raise ValueError(
                f"{key} length mismatch: shape {tuple(values.shape)} for input_ids of shape "
                f"{tuple(batch['input_ids'].shape)}"
            )
        if torch.isinf(values).any():
            raise ValueError(f"{key} contains inf (a broken reference model or a corrupted column)")

    def _reference_model(self) -> tuple[nn.Module, contextlib.AbstractContextManager]:
        if self.ref_model is not None:
            return self.ref_model, contextlib.nullcontext()
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
            return model, model.disable_adapter()
        raise ValueError(
            "SLMTrainer needs a reference: a 'ref_loss' column (hf_select.compute_reference_losses), a "
            "ref_model, or a peft model whose adapter-free base serves as the reference"
        )

    def _add_reference(self, batch: dict[str, Any]) -> None:
        """Put float32 ``ref_loss`` (and ``ref_entropy`` when scored) into ``batch``, precomputed or online."""
        wanted = ["ref_loss"] + (["ref_entropy"] if self.args.score == "reference_entropy" else [])
        if all(k in batch for k in wanted):
            for key in wanted:
                batch[key] = batch[key].float()
                self._check_reference(batch, key)
            return
        model, context = self._reference_model()
        was_training = model.training
        model.eval()
        try:
            with context:
                stats = reference_token_stats(
                    model,
                    batch["input_ids"],
                    batch.get("attention_mask"),
                    batch.get("position_ids"),
                    batch.get("labels"),
                    with_entropy="ref_entropy" in wanted,
                    chunk_size=self.args.reference_chunk_size,
                )
        finally:
            model.train(was_training)
        for key in wanted:
            batch[key] = stats[key]

    # ---- selection before the first backward -------------------------------------------------------------

    def _sum_over_processes(self, value: torch.Tensor) -> torch.Tensor:
        value = value.reshape(1).to(self.args.device)
        if self.accelerator.num_processes > 1:
            value = self.accelerator.gather(value)
        return value.sum()

    def _gather_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """All valid scores of all processes (flat); processes hold different numbers of tokens."""
        if self.accelerator.num_processes == 1:
            return scores
        lengths = self.accelerator.gather(torch.tensor([scores.numel()], device=scores.device))
        padded = torch.full((int(lengths.max()),), float("nan"), device=scores.device)
        padded[: scores.numel()] = scores
        everything = self.accelerator.gather(padded)
        return everything[~torch.isnan(everything)]

    def _global_selection(self, scores: list[torch.Tensor], valid: list[torch.Tensor]) -> list[torch.Tensor]:
        """Exactly ``ceil(ratio * n)`` tokens over all micro-batches of all processes
        (:func:`hf_select.slm.token_selection.global_cutoff`): ties at the threshold go to earlier processes, then
        earlier micro-batches, rows and positions."""
        flat = torch.cat([s.detach().float()[v] for s, v in zip(scores, valid)])
        threshold, ties = global_cutoff(self._gather_scores(flat), self.args.token_select_ratio)
        threshold = threshold.to(flat.device)
        if self.accelerator.num_processes > 1:
            local = torch.tensor([int((flat == threshold).sum())], device=flat.device)
            counts = self.accelerator.gather(local)
            ties = max(ties - int(counts[: self.accelerator.process_index].sum()), 0)
        return select_by_cutoff(scores, valid, threshold, ties)

    def _scores(self, batch: dict[str, Any], student_loss: torch.Tensor | None) -> torch.Tensor:
        if self.args.score == "excess_loss":
            return student_loss - batch["ref_loss"]
        values = batch[self._reference_column]
        return -values if self.args.self_reference_keep == "low" else values

    def _rewound_rng(self) -> contextlib.AbstractContextManager:
        """The CPU and the training device's random number generators, restored on exit."""
        device = self.args.device
        if device.type == "cpu":
            return torch.random.fork_rng(devices=[])
        index = device.index if device.index is not None else torch.get_device_module(device.type).current_device()
        return torch.random.fork_rng(devices=[index], device_type=device.type)

    def _student_losses_no_grad(self, batch: dict[str, Any]) -> torch.Tensor:
        """The student's per-token losses of the training forward (train mode: the same dropout layers)."""
        model = self.model
        was_training = model.training
        model.train()
        try:
            with self.compute_loss_context_manager():
                losses, _ = per_token_loss(
                    model,
                    batch["input_ids"],
                    batch.get("attention_mask"),
                    batch.get("position_ids"),
                    batch.get("labels"),
                )
        finally:
            model.train(was_training)
        return losses

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """Collect the step's micro-batches and fix the selection denominator (and, for the "global" scope,
        the selection) before the first backward. Returns ``num_items_in_batch = None``: SLM normalises by
        the selected count itself."""
        batches = list(itertools.islice(epoch_iterator, num_batches))
        if not batches:
            return batches, None
        batches = [self._prepare_inputs(b) for b in batches]
        for batch in batches:
            _, positions = prepare_model_inputs(
                batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids")
            )
            batch[_VALID] = prediction_mask(
                batch["input_ids"], batch.get("attention_mask"), positions, batch.get("labels")
            )
            self._add_reference(batch)
            for key in REFERENCE_COLUMNS:  # NaN: no reference value, never selected nor counted
                if key in batch:
                    batch[_VALID] = batch[_VALID] & ~torch.isnan(batch[key])
        ratio, scope = self.args.token_select_ratio, self.args.select_scope
        if scope != "global":
            total = self._sum_over_processes(sum(selection_count(b[_VALID], ratio, scope) for b in batches))
            for batch in batches:
                batch[_TOTAL] = total
            return batches, None
        if self._needs_student and len(batches) == 1:
            return batches, None  # ranked in compute_loss, from the training forward itself
        if self._needs_student:
            if not getattr(self, "_warned_ranking_forward", False):
                # measured (benchmarks/slm_overhead.py --grad_accum 2): 1.31x a plain step vs 1.005x with GA 1
                logger.warning(
                    f"SLM 'global' scope with {len(batches)} micro-batches per step: the excess loss ranks "
                    "the whole step first, one extra no-grad student forward per micro-batch (about +30% per "
                    "step). The same update without it: gradient_accumulation_steps=1 and a per-device batch "
                    f"{len(batches)}x larger, if it fits in memory."
                )
                self._warned_ranking_forward = True
            # rewound: the training forwards, run in the same order, draw the same dropout masks
            with self._rewound_rng():
                for batch in batches:
                    batch[_STUDENT] = self._student_losses_no_grad(batch)
        scores = [self._scores(b, b.get(_STUDENT)) for b in batches]
        selected = self._global_selection(scores, [b[_VALID] for b in batches])
        total = self._sum_over_processes(sum(s.sum() for s in selected))
        for batch, sel in zip(batches, selected):
            batch[_SELECTED], batch[_TOTAL] = sel, total
        return batches, None

    # ---- loss ---------------------------------------------------------------------------------------------

    @staticmethod
    def _token_cross_entropy(
        logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """Float32 CE ``[batch, seq]`` of predicting token ``t`` from the logits at ``t - 1`` (0 elsewhere).

        Computed as the stock causal-LM loss computes it -- the targets shift left instead of the logits, and
        one ``cross_entropy`` runs over the flat view of the logits with the other positions ignored -- so the
        step copies no ``[tokens, vocab]`` tensor that a plain step does not (the SLM overhead floor).
        """
        batch, seq, vocab = logits.shape
        shifted = torch.full_like(targets, -100)
        shifted[:, :-1] = torch.where(valid[:, 1:], targets[:, 1:], -100)
        ce = F.cross_entropy(
            logits.reshape(-1, vocab).float(), shifted.reshape(-1), reduction="none", ignore_index=-100
        ).view(batch, seq)
        return F.pad(ce[:, :-1], (1, 0))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        input_ids = inputs["input_ids"]
        model_inputs, positions = prepare_model_inputs(
            input_ids, inputs.get("attention_mask"), inputs.get("position_ids"), model
        )
        labels = inputs.get("labels")
        valid = inputs.get(_VALID)
        if valid is None:
            valid = prediction_mask(input_ids, inputs.get("attention_mask"), positions, labels)
        outputs = model(**model_inputs, use_cache=False)
        targets = labels if labels is not None else input_ids
        token_ce = self._token_cross_entropy(outputs.logits, targets, valid)
        if _VALID not in inputs:  # evaluation / prediction: plain causal-LM loss
            loss = token_ce.sum() / valid.sum().clamp(min=1)
            return (loss, outputs) if return_outputs else loss
        loss = self._selective_loss(inputs, token_ce, valid)
        return (loss, outputs) if return_outputs else loss

    def _selective_loss(
        self, inputs: dict[str, Any], token_ce: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        student = token_ce.detach()
        selected, total = self._select(inputs, self._scores(inputs, student), valid)
        excess = student - inputs["ref_loss"]
        weights = (excess >= 0) if self.args.negative_excess == "exclude" else None
        loss_sum = selective_loss_sum(token_ce, selected, weights)
        self._record_stats(student, inputs["ref_loss"], excess, valid, selected)
        return loss_sum * self.accelerator.num_processes / total.clamp(min=1)

    def _select(
        self, inputs: dict[str, Any], scores: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The micro-batch's selection mask and the number of tokens selected in the whole step."""
        if _SELECTED in inputs:
            return inputs[_SELECTED], inputs[_TOTAL]
        if self.args.select_scope == "global":
            selected = self._global_selection([scores], [valid])[0]
            return selected, self._sum_over_processes(selected.sum())
        selected = select_top_tokens(scores, valid, self.args.token_select_ratio, self.args.select_scope)
        return selected, inputs[_TOTAL]

    # ---- logging ------------------------------------------------------------------------------------------

    def _record_stats(self, student, ref, excess, valid, selected) -> None:
        # masked sums instead of boolean indexing: no host-device synchronisation per step (``where``, not a
        # product: a token without a reference value holds NaN)
        zero = torch.zeros((), dtype=torch.float64, device=valid.device)
        unselected = valid & ~selected
        stats = torch.stack(
            [
                valid.double().sum(),
                selected.double().sum(),
                torch.where(valid, excess.double(), zero).sum(),
                torch.where(selected, student.double(), zero).sum(),
                torch.where(unselected, student.double(), zero).sum(),
                torch.where(valid, ref.double(), zero).sum(),
            ]
        )
        self._slm_stats += stats.to(self._slm_stats.device)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._slm_stats[0] > 0:
            stats = self._slm_stats
            if self.accelerator.num_processes > 1:
                stats = self.accelerator.gather(stats[None]).sum(0)
            valid, chosen, excess, ce_sel, ce_unsel, ref = stats.tolist()
            logs["slm_selected_share"] = chosen / valid
            logs["slm_excess_loss"] = excess / valid
            logs["slm_loss_selected"] = ce_sel / max(chosen, 1)
            logs["slm_loss_unselected"] = ce_unsel / max(valid - chosen, 1)
            logs["slm_ref_loss"] = ref / valid
            self._slm_stats.zero_()
        super().log(logs, start_time)
