"""Exactness properties of the core on the families where each is hardest (the conformance table checks the
same properties on every family)."""

import copy
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_select.attention_influence.head_masking import causal_running_mean
from hf_select.model_adapter import UnsupportedModelError
from hf_select.testing import tiny_model
from hf_select.token_loss import per_token_loss, probe_model, split_causal_lm

sys.path.insert(0, str(Path(__file__).parent))
from conformance_models import build_family


def _ce(model, ids):
    with torch.no_grad():
        logits = model(input_ids=ids[None], use_cache=False).logits[0].float()
    return F.cross_entropy(logits[:-1], ids[1:], reduction="none")


@pytest.mark.parametrize(
    ("family", "multiplier"), [("cohere", 0.25), ("cohere2", 0.25), ("granite", 1 / 8), ("falcon_h1", 0.3)]
)
def test_logit_scaling_after_lm_head_is_applied(family, multiplier):
    model = build_family(family, initializer_range=0.2)
    ids = torch.randint(3, 300, (16,), generator=torch.Generator().manual_seed(0))
    assert probe_model(model).multiplier == pytest.approx(multiplier)
    torch.testing.assert_close(
        per_token_loss(model, ids[None]).losses[0, 1:], _ce(model, ids), atol=2e-5, rtol=2e-5
    )


def test_slm_excess_loss_between_identical_copies_is_zero():
    from hf_select.slm.reference_losses import reference_token_stats

    model = build_family("cohere", initializer_range=0.2)
    ids = torch.randint(3, 300, (1, 16), generator=torch.Generator().manual_seed(1))
    student = torch.zeros(1, 16)
    student[0, 1:] = _ce(model, ids[0])
    ref = reference_token_stats(copy.deepcopy(model), ids)["ref_loss"]
    assert float((student - ref)[0, 1:].abs().max()) < 2e-5


def test_unknown_logit_transform_is_a_clear_error():
    model = tiny_model("llama")
    original = type(model).forward

    def scaled_forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        out.logits = out.logits * 3.0
        return out

    model.forward = scaled_forward.__get__(model)
    with pytest.raises(UnsupportedModelError, match="llama: the LM head"):
        split_causal_lm(model)


def test_gpt_oss_packed_rows_get_explicit_block_masks():
    model = build_family("gpt_oss", initializer_range=0.2)
    assert probe_model(model).packing == "explicit_mask"
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randint(3, 300, (12,), generator=gen), torch.randint(3, 300, (20,), generator=gen)
    positions = torch.cat([torch.arange(12), torch.arange(20)])[None]
    packed = per_token_loss(model, torch.cat([a, b])[None], position_ids=positions).losses[0]
    torch.testing.assert_close(packed[13:], _ce(model, b), atol=2e-5, rtol=2e-5)


def test_linear_attention_packed_rows_raise_naming_the_family():
    model = build_family("qwen3_next")
    positions = torch.cat([torch.arange(6), torch.arange(6)])[None]
    with pytest.raises(UnsupportedModelError, match="qwen3_next: packed rows are not exact"):
        per_token_loss(model, torch.randint(3, 300, (1, 12)), position_ids=positions)
    per_token_loss(model, torch.randint(3, 300, (1, 12)))  # one document per row stays fine


def test_windowed_running_mean_by_hand():
    values = torch.randn(2, 11, 3)
    positions = torch.tensor([list(range(11)), list(range(6)) + list(range(5))])
    mask = torch.ones(2, 11)
    mask[0, :2] = 0  # left padding
    got = causal_running_mean(values, mask, positions, window=3)
    for row in range(2):
        for i in range(11):
            start = 0 if row == 0 or i < 6 else 6
            visible = [j for j in range(max(start, i - 2), i + 1) if mask[row, j] > 0]
            want = values[row, visible].mean(0) if visible else torch.zeros(3)
            torch.testing.assert_close(got[row, i], want)


def test_mistral_window_masking_equals_uniform_attention_kernel():
    from conformance_models import uniform_attention_reference

    from hf_select.attention_influence.head_masking import mask_heads

    model = build_family("mistral", initializer_range=0.2)
    ids = torch.randint(3, 300, (2, 40), generator=torch.Generator().manual_seed(3))
    heads = [(0, 1), (1, 2)]
    with uniform_attention_reference(model, heads):
        want = per_token_loss(model, ids).losses
    with mask_heads(model, heads):
        got = per_token_loss(model, ids).losses
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


def test_detection_requires_the_first_answer_token():
    from hf_select.attention_influence.retrieval_heads import answer_quality

    assert answer_quality(torch.tensor([False, True, True, True])) == 0.0  # 75% accurate, lookup failed
    assert answer_quality(torch.tensor([True, False, True, True])) == 0.75


def test_global_ties_keep_exactly_ceil_ratio_n():
    from hf_select.slm.token_selection import global_cutoff, select_by_cutoff

    scores = torch.zeros(2, 6)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[:, 0] = False
    threshold, ties = global_cutoff(scores[valid], 0.6)
    # the batch split into two micro-batches, one row each: the global cut is shared across them
    selected = torch.cat(select_by_cutoff([scores[:1], scores[1:]], [valid[:1], valid[1:]], threshold, ties))
    assert int(selected.sum()) == math.ceil(0.6 * 10)
    assert selected[0, 1:].all() and selected[1, 1] and not selected[1, 2:].any()  # by position
    losses = torch.arange(12.0).reshape(2, 6)
    assert float(losses[selected].mean()) == pytest.approx((1 + 2 + 3 + 4 + 5 + 7) / 6)


def test_slm_global_scope_with_student_equal_to_reference_selects_ceil_ratio_n(tmp_path):
    from datasets import Dataset

    from hf_select.packing import pack_documents
    from hf_select.trainer_ext import SLMCollator, SLMConfig, SLMTrainer

    student = tiny_model("llama").train()
    gen = torch.Generator().manual_seed(4)
    rows = pack_documents([torch.randint(4, 300, (n,), generator=gen).tolist() for n in (7, 9, 10, 6)], 16)
    rows.pop("num_documents")
    args = SLMConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", select_scope="global")
    trainer = SLMTrainer(
        model=student, args=args, ref_model=copy.deepcopy(student), train_dataset=Dataset.from_dict(rows)
    )
    features = [{k: v[i] for k, v in rows.items()} for i in range(len(rows["input_ids"]))]
    for num_batches in (1, 2):
        trainer._slm_stats.zero_()
        parts = (
            [SLMCollator()(features)]
            if num_batches == 1
            else [SLMCollator()(features[:1]), SLMCollator()(features[1:])]
        )
        batches, _ = trainer.get_batch_samples(iter(parts), num_batches, trainer.args.device)
        for part in batches:
            trainer.compute_loss(student, part)
        valid, chosen = trainer._slm_stats[:2].tolist()
        assert chosen == math.ceil(0.6 * valid)


def test_bf16_head_matmul_runs_in_float32():
    model = tiny_model("llama").to(torch.bfloat16)
    ids = torch.randint(4, 300, (2, 24), generator=torch.Generator().manual_seed(5))
    backbone, head, _ = split_causal_lm(model)
    with torch.no_grad():
        hidden = backbone(input_ids=ids, use_cache=False)[0]
        exact = F.linear(hidden.float(), model.lm_head.weight.float()).log_softmax(-1)
        half = model.lm_head(hidden).float().log_softmax(-1)
    want = -exact[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    bf16 = -half[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    got = per_token_loss(model, ids).losses[:, 1:]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert float((bf16 - want).abs().max()) > 1e-4  # the bf16 head is measurably off


def test_token_dynamics_delta_reads_slope_times_n_by_default():
    from hf_select.slm.token_dynamics import classify_token_dynamics, loss_deltas

    losses = np.array([[1.0, 0.0], [0.96, 0.0], [0.92, 0.0], [0.88, 0.0], [0.84, 0.0]])  # slope -0.04
    assert loss_deltas(losses)[0] == pytest.approx(-0.04 * 5)
    assert loss_deltas(losses, span="n-1")[0] == pytest.approx(-0.04 * 4)
    # |delta| = 0.2 exactly (not below -0.2) under n; 0.16 under n - 1: both stay outside H->L here, but
    # a slightly steeper token separates the readings
    steeper = losses * np.array([1.1, 1.0])
    assert classify_token_dynamics(steeper)[0] == 2  # H->L: delta = -0.22
    assert classify_token_dynamics(steeper, span="n-1")[0] != 2  # delta = -0.176
    with pytest.raises(ValueError, match="span"):
        loss_deltas(losses, span="end")


def test_attention_influence_config_is_the_single_source_and_the_fingerprint_sees_the_weights():
    from datasets import Dataset

    from hf_select.attention_influence import AttentionInfluence, AttentionInfluenceConfig
    from hf_select.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_model("llama")
    data = Dataset.from_dict({"text": ["a b c", "d e f"]})
    config = AttentionInfluenceConfig(heads=[(1, 0)], max_length=64)
    scorer = AttentionInfluence(model, tokenizer, config=config)
    same = AttentionInfluence(model, tokenizer, [(1, 0)], max_length=64)  # the old kwargs still work
    assert scorer.config == same.config and scorer.max_length == 64 and scorer.heads == [(1, 0)]
    assert scorer.fingerprint(data) == same.fingerprint(data)
    retrained = copy.deepcopy(model)  # same path and config, other weights
    with torch.no_grad():
        retrained.lm_head.weight.add_(1e-3)
    other_dtype = copy.deepcopy(model).to(torch.bfloat16)
    prints = {
        AttentionInfluence(m, tokenizer, config=config).fingerprint(data)
        for m in (model, retrained, other_dtype)
    }
    assert len(prints) == 3
    longer = AttentionInfluence(
        model, tokenizer, config=AttentionInfluenceConfig(heads=[(1, 0)], max_length=32)
    )
    assert longer.fingerprint(data) != scorer.fingerprint(data)
    assert all(f.metadata.get("help") for f in __import__("dataclasses").fields(AttentionInfluenceConfig))
    with pytest.raises(ValueError, match="max_length"):
        AttentionInfluenceConfig(heads=[(1, 0)], max_length=1)
