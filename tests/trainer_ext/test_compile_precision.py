"""torch.compile, bf16 autocast and gradient checkpointing with the AttentionInfluence scorer, SLM and OPUS.

- ``torch_compile=True`` gives the eager numbers within 1e-5 (OPUS: non-zero, equal utilities: its scoring hooks
  run on the plain module inside the compiled wrapper, so they cannot be silently skipped by a compiled graph).
  Compiling on 2 shared CPU cores takes minutes (a tiny Llama's forward alone: 142 s here), so these are slow.
- ``bf16=True`` on CPU (autocast): SLM's token selection against float32 on a tiny model; the measured overlap
  is asserted with a margin and reported in the test.
- ``gradient_checkpointing=True``: SLM and OPUS (whose scoring pass runs in eval mode, where transformers does
  not checkpoint) give the same weights and utilities as without it.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset

sys.path.insert(0, str(Path(__file__).parent))
from slm_helpers import packed_rows

from hf_select.testing import tiny_model
from hf_select.trainer_ext import OPUSConfig, OPUSTrainer, SLMConfig, SLMTrainer

SEQ = 16


class RecordingSLM(SLMTrainer):
    """The real SLMTrainer; keeps each micro-batch's selection mask."""

    def _record_stats(self, student, ref, excess, valid, selected):
        self.selections = [*getattr(self, "selections", []), selected.detach().clone()]
        super()._record_stats(student, ref, excess, valid, selected)


def _slm(tmp_path, steps=2, **kw):
    args = SLMConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=steps,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        **kw,
    )
    model = tiny_model("llama", seed=0).train()
    trainer = RecordingSLM(
        model=model,
        args=args,
        ref_model=tiny_model("llama", seed=1),
        train_dataset=Dataset.from_dict(packed_rows(num_rows=8, length=SEQ, seed=3)),
    )
    trainer.train()
    return trainer


def _opus_rows(n, seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 300, (n, SEQ), generator=gen).tolist()
    return Dataset.from_dict(
        {"input_ids": ids, "labels": [[-100, *r[1:]] for r in ids], "position_ids": [list(range(SEQ))] * n}
    )


def _opus(tmp_path, steps=2, **kw):
    kw.setdefault("learning_rate", 1e-2)
    args = OPUSConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=steps,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        score_window=SEQ,
        proxy_batch_size=2,
        selection="topk",
        remove_unused_columns=False,
        **kw,
    )
    trainer = OPUSTrainer(
        model=tiny_model("llama", seed=0).train(),
        args=args,
        train_dataset=_opus_rows(32, 1),
        proxy_dataset=_opus_rows(8, 2),
    )
    trainer.train()
    return trainer


def _max_diff(a, b) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def _plain(trainer):
    from hf_select.model_adapter import unwrap_model

    return unwrap_model(trainer.model)


# ----------------------------------------------------------------------------------- gradient checkpointing


def test_slm_with_gradient_checkpointing_equals_without(tmp_path, one_thread):
    plain = _slm(tmp_path / "plain")
    checkpointed = _slm(tmp_path / "gc", gradient_checkpointing=True)
    assert _max_diff(_plain(plain), _plain(checkpointed)) < 1e-6
    assert all(torch.equal(a, b) for a, b in zip(plain.selections, checkpointed.selections))


def test_opus_with_gradient_checkpointing_equals_without(tmp_path, one_thread):
    plain = _opus(tmp_path / "plain")
    checkpointed = _opus(tmp_path / "gc", gradient_checkpointing=True)
    assert _plain(checkpointed).model.gradient_checkpointing  # the training step did checkpoint
    for a, b in zip(plain.opus_history, checkpointed.opus_history):
        assert a["selected"] == b["selected"] and any(v != 0 for v in a["alignment"])
        assert a["alignment"] == pytest.approx(b["alignment"], rel=1e-5, abs=1e-12)
    assert _max_diff(_plain(plain), _plain(checkpointed)) < 1e-6


# ------------------------------------------------------------------------------------------------ bf16


def test_slm_bf16_autocast_selection_overlaps_fp32(tmp_path, one_thread):
    """bf16 autocast changes the student's per-token losses by ~1e-2, so tokens near the threshold may swap.
    Measured here (tiny Llama, 4 packed rows of 16 tokens per step, ratio 0.6, 3 steps): 100% of the
    selected tokens agree at every step (the tiny model's excess losses are spread far wider than bf16's
    rounding) while the weights after 3 steps differ by 3e-4 (autocast is on), and both runs select exactly
    ceil(0.6 n) tokens."""
    fp32 = _slm(tmp_path / "fp32", steps=3)
    bf16 = _slm(tmp_path / "bf16", steps=3, bf16=True)
    assert bf16.accelerator.mixed_precision == "bf16"
    assert _max_diff(_plain(fp32), _plain(bf16)) > 1e-6  # bf16 did change the arithmetic
    for a, b in zip(fp32.selections, bf16.selections, strict=True):
        assert int(a.sum()) == int(b.sum())
        overlap = float((a & b).sum()) / float(a.sum())
        assert overlap >= 0.9, overlap


# --------------------------------------------------------------------------------------------- compile


@pytest.mark.slow
def test_attention_influence_under_torch_compile_equals_eager():
    from hf_select.attention_influence import AttentionInfluence

    class TokenIds:
        pad_token_id = 0

        def __len__(self):
            return 0

    torch.set_num_threads(1)
    model = tiny_model("llama")
    docs = torch.randint(4, 300, (4, 24), generator=torch.Generator().manual_seed(0)).tolist()
    heads = [(1, 0), (1, 2)]
    eager = AttentionInfluence(model, TokenIds(), heads, max_length=24, batch_size=2).score_token_ids(docs)
    compiled_model = torch.compile(copy.deepcopy(model))
    compiled = AttentionInfluence(compiled_model, TokenIds(), heads, max_length=24, batch_size=2)
    out = compiled.score_token_ids(docs)
    assert all(s != 0 for s in out["ai_score"])
    assert out["ai_score"] == pytest.approx(eager["ai_score"], abs=1e-5)
    assert out["ai_loss_base"] == pytest.approx(eager["ai_loss_base"], abs=1e-5)


@pytest.mark.slow
def test_slm_under_torch_compile_equals_eager(tmp_path, one_thread):
    eager = _slm(tmp_path / "eager")
    compiled = _slm(tmp_path / "compiled", torch_compile=True)
    assert hasattr(compiled.model, "_orig_mod") or hasattr(compiled.model_wrapped, "_orig_mod")
    assert _max_diff(_plain(eager), _plain(compiled)) < 1e-5
    assert all(torch.equal(a, b) for a, b in zip(eager.selections, compiled.selections))


@pytest.mark.slow
def test_opus_under_torch_compile_equals_eager(tmp_path, one_thread):
    """SGD: AdamW's first update is about ``lr * sign(g)``, so compiled kernels' 1e-8 gradient differences on
    near-zero gradients become 1e-2 weight differences (measured: alignments then differ by 1e-3 relative at
    the next step); the scoring hooks are what compile could break, and they do not depend on the optimizer."""
    eager = _opus(tmp_path / "eager", optim="sgd", learning_rate=0.1)
    compiled = _opus(tmp_path / "compiled", optim="sgd", learning_rate=0.1, torch_compile=True)
    assert len(eager.opus_history) == len(compiled.opus_history) == 2
    for a, b in zip(eager.opus_history, compiled.opus_history):
        assert any(v != 0 for v in b["alignment"])  # not the all-zero scores of hooks skipped by a graph
        assert b["alignment"] == pytest.approx(a["alignment"], rel=1e-5, abs=1e-5 * max(map(abs, a["alignment"])))
        assert a["selected"] == b["selected"]
    assert _max_diff(_plain(eager), _plain(compiled)) < 1e-5
