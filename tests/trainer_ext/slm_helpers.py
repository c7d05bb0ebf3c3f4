"""Shared set-up of the SLM trainer tests (also run by the 2-process torchrun script)."""

from __future__ import annotations

import copy
import math

import torch
from datasets import Dataset

from hf_select.packing import pack_documents
from hf_select.testing import TINY_VOCAB, tiny_model
from hf_select.token_loss import per_token_loss, prediction_mask, prepare_model_inputs
from hf_select.trainer_ext import SLMCollator, SLMConfig, SLMTrainer

LR = 0.5


def packed_rows(num_rows: int = 4, length: int = 16, seed: int = 0) -> dict[str, list]:
    """``num_rows`` full rows of ``length`` tokens, two or three documents each."""
    gen = torch.Generator().manual_seed(seed)
    docs = []
    for _ in range(num_rows):
        cut = int(torch.randint(4, length - 4, (1,), generator=gen))
        docs += [torch.randint(4, TINY_VOCAB, (n,), generator=gen).tolist() for n in (cut, length - cut)]
    rows = pack_documents(docs, max_length=length)
    assert len(rows["input_ids"]) == num_rows and all(len(r) == length for r in rows["input_ids"])
    rows.pop("num_documents")
    return rows


def student_and_reference():
    return tiny_model("llama", seed=0), tiny_model("llama", seed=1)


def train_one_step(student, rows, tmp_dir, *, ref_model=None, batch_size=4, ga=1, **slm):
    args = SLMConfig(
        output_dir=str(tmp_dir),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=ga,
        max_steps=1,
        learning_rate=LR,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        weight_decay=0.0,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        **slm,
    )
    model = copy.deepcopy(student).train()
    trainer = SLMTrainer(model=model, args=args, ref_model=ref_model, train_dataset=Dataset.from_dict(rows))
    trainer.train()
    return model, trainer


def hand_update(student, ref_model, rows, ratio=0.6, scope="global", ref_losses=None):
    """Parameters after one SGD step on the selective loss, computed independently of the trainer."""
    model = copy.deepcopy(student).train()
    batch = SLMCollator()([{k: v[i] for k, v in rows.items()} for i in range(len(rows["input_ids"]))])
    ids, pos = batch["input_ids"], batch["position_ids"]
    kwargs, _ = prepare_model_inputs(ids, None, pos)
    logp = model(**kwargs, use_cache=False).logits.float().log_softmax(-1)
    ce = torch.zeros(ids.shape)
    ce[:, 1:] = -logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    valid = prediction_mask(ids, None, pos, batch["labels"])
    ref = ref_losses if ref_losses is not None else per_token_loss(ref_model, ids, position_ids=pos).losses
    valid = valid & ~torch.isnan(ref)  # a token without a reference value is never a candidate
    excess = ce.detach() - ref
    chosen = torch.zeros_like(valid)
    groups = [(r,) for r in range(ids.shape[0])] if scope == "sequence" else [tuple(range(ids.shape[0]))]
    for group in groups:
        cells = [(r, t) for r in group for t in range(ids.shape[1]) if valid[r, t]]
        k = math.ceil(round(ratio * len(cells), 6))
        for r, t in sorted(cells, key=lambda c: -float(excess[c]))[:k]:
            chosen[r, t] = True
    loss = ce[chosen].mean()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= LR * p.grad
    return model


def max_param_diff(a, b) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))
