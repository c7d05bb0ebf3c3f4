"""Contract table over the trainer pairs: a run resumed from a checkpoint ends with the same
weights as the uninterrupted run, and gradient accumulation 2 gives the update of accumulation 1."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from hf_select.testing import tiny_model
from hf_select.trainer_ext import OPUSConfig, OPUSTrainer, SLMConfig, SLMTrainer

from .slm_helpers import packed_rows


def _common(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=4,
        learning_rate=1e-2,
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
    )
    base.update(kw)
    return base


def _slm(tmp_path, **kw):
    args = SLMConfig(**_common(tmp_path, **kw), token_select_ratio=0.6)
    rows = packed_rows(num_rows=8, length=16)
    return SLMTrainer(
        model=tiny_model("llama", seed=0).train(),
        args=args,
        ref_model=tiny_model("llama", seed=1),
        train_dataset=Dataset.from_dict(rows),
    )


def _opus_rows(n, length=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 300, (n, length), generator=gen).tolist()
    return {"input_ids": ids, "labels": [[-100, *r[1:]] for r in ids], "position_ids": [list(range(length))] * n}


def _opus(tmp_path, **kw):
    args = OPUSConfig(
        **_common(tmp_path, **kw), remove_unused_columns=False, score_window=8, proxy_batch_size=2, sketch_dim=512
    )
    return OPUSTrainer(
        model=tiny_model("llama", seed=0).train(),
        args=args,
        train_dataset=Dataset.from_dict(_opus_rows(32, seed=1)),
        proxy_dataset=Dataset.from_dict(_opus_rows(3, seed=2)),
    )


TRAINERS = {"slm": _slm, "opus": _opus}


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_resume_equals_the_uninterrupted_run(name, tmp_path):
    build = TRAINERS[name]
    full = build(tmp_path / "full")
    full.train()
    final = {k: v.detach().clone() for k, v in full.model.state_dict().items()}
    resumed = build(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    for key, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, final[key], rtol=0, atol=1e-6, msg=f"{name}: {key} after resume")


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_gradient_accumulation_two_equals_one(name, tmp_path):
    build = TRAINERS[name]
    extra = {"select_ratio": 1.0} if name == "opus" else {}  # OPUS keeps every candidate: the step itself
    # SGD without clipping: Adam's first step divides by |g|, which turns summation-order noise on
    # near-zero gradients into visible differences.
    sgd = dict(max_steps=1, save_strategy="no", optim="sgd", max_grad_norm=0.0, lr_scheduler_type="constant")
    one = build(tmp_path / "ga1", per_device_train_batch_size=4, gradient_accumulation_steps=1, **sgd, **extra)
    two = build(tmp_path / "ga2", per_device_train_batch_size=2, gradient_accumulation_steps=2, **sgd, **extra)
    one.train()
    two.train()
    b = dict(two.model.named_parameters())
    for key, value in one.model.named_parameters():
        torch.testing.assert_close(b[key], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
