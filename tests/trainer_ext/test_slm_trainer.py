import math
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from hf_select.slm.reference_losses import compute_reference_losses
from hf_select.testing import run_torchrun
from hf_select.token_loss import per_token_loss
from hf_select.trainer_ext import SLMCollator, SLMConfig, SLMTrainer

sys.path.insert(0, str(Path(__file__).parent))
from slm_helpers import (
    hand_update,
    max_param_diff,
    packed_rows,
    student_and_reference,
    train_one_step,
)

TOL = 2e-5


@pytest.mark.parametrize("scope", ["sequence", "microbatch", "global"])
def test_one_step_equals_hand_computed_selective_update(scope, tmp_path):
    student, ref = student_and_reference()
    rows = packed_rows()
    trained, trainer = train_one_step(student, rows, tmp_path, ref_model=ref, select_scope=scope)
    # one micro-batch holds the whole batch: "microbatch" ranks like "global"
    expected = hand_update(student, ref, rows, scope="sequence" if scope == "sequence" else "global")
    assert max_param_diff(trained, expected) < TOL
    assert max_param_diff(trained, student) > 1e-3  # it did train
    logged = trainer.state.log_history[0]
    assert 0.6 <= logged["slm_selected_share"] < 0.7
    assert logged["slm_loss_selected"] > logged["slm_loss_unselected"] - 1.0


@pytest.mark.parametrize("scope", ["sequence", "global"])
def test_gradient_accumulation_does_not_change_the_update(scope, tmp_path):
    student, ref = student_and_reference()
    rows = packed_rows()
    one, _ = train_one_step(student, rows, tmp_path / "a", ref_model=ref, select_scope=scope)
    two, _ = train_one_step(
        student, rows, tmp_path / "b", ref_model=ref, select_scope=scope, batch_size=1, ga=4
    )
    assert max_param_diff(one, two) < TOL


def test_microbatch_scope_with_accumulation_normalises_by_the_whole_step(tmp_path):
    """Each micro-batch selects ceil(0.6 * n) on its own; the denominator is the step's total."""
    student, ref = student_and_reference()
    rows = packed_rows(num_rows=2)
    trained, _ = train_one_step(
        student, rows, tmp_path, ref_model=ref, select_scope="microbatch", batch_size=1, ga=2
    )
    # one row per micro-batch: identical to ranking per sequence
    assert max_param_diff(trained, hand_update(student, ref, rows, scope="sequence")) < TOL


def test_precomputed_reference_losses_equal_online(tmp_path):
    student, ref = student_and_reference()
    rows = packed_rows()
    dataset = compute_reference_losses(Dataset.from_dict(rows), ref, batch_size=3)
    online, _ = train_one_step(student, rows, tmp_path / "a", ref_model=ref)
    offline, _ = train_one_step(student, dataset.to_dict(), tmp_path / "b", ref_model=None)
    assert max_param_diff(online, offline) < TOL


def test_peft_base_model_is_the_default_reference(tmp_path):
    peft = pytest.importorskip("peft")
    student, _ = student_and_reference()
    model = peft.get_peft_model(student, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    rows = packed_rows(num_rows=2)
    args = SLMConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=1,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-2,
        logging_steps=1,
    )
    trainer = SLMTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows))
    trainer.train()
    # adapter starts as identity: the reference equals the student, excess losses are ~0
    assert abs(trainer.state.log_history[0]["slm_excess_loss"]) < 1e-4


def test_self_reference_scores_keep_low_reference_values(tmp_path):
    student, ref = student_and_reference()
    rows = packed_rows(num_rows=2)
    for score in ("reference_loss", "reference_entropy"):
        _, trainer = train_one_step(student, rows, tmp_path / score, ref_model=ref, score=score)
        assert 0.6 <= trainer.state.log_history[0]["slm_selected_share"] < 0.7


def test_bad_inputs_get_clear_errors(tmp_path):
    for ratio in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="token_select_ratio"):
            SLMConfig(output_dir=str(tmp_path), token_select_ratio=ratio)
    with pytest.raises(ValueError, match="select_scope"):
        SLMConfig(output_dir=str(tmp_path), select_scope="document")
    row = {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "position_ids": [0, 1, 2]}
    collate = SLMCollator(pad_columns=("ref_loss",))
    with pytest.raises(ValueError, match="ref_loss length mismatch"):
        collate([{**row, "ref_loss": [0.0, 1.0]}])
    with pytest.raises(ValueError, match="inf"):
        collate([{**row, "ref_loss": [0.0, float("inf"), 1.0]}])
    assert collate([{**row, "ref_loss": [0.0, float("nan"), 1.0]}])["ref_loss"][0, 1].isnan()  # no value
    student, _ = student_and_reference()
    with pytest.raises(ValueError, match="needs a reference"):
        train_one_step(student, packed_rows(num_rows=1), tmp_path / "noref", batch_size=1)


def test_negative_excess_exclude_drops_tokens_the_student_already_knows(tmp_path):
    student, _ = student_and_reference()
    rows = packed_rows(num_rows=2)
    # a reference far worse than the student: every excess loss is negative, nothing is trained
    dataset = dict(rows, ref_loss=[[100.0] * len(r) for r in rows["input_ids"]])
    trained, _ = train_one_step(student, dataset, tmp_path, negative_excess="exclude")
    assert max_param_diff(trained, student) == 0.0


@pytest.mark.slow  # ~20-45 s: two processes import torch and transformers
def test_two_processes_equal_one(tmp_path):
    """torchrun --nproc_per_node 2 (gloo, 2 rows per rank) gives the 1-process update of the 4-row batch."""
    student, ref = student_and_reference()
    rows = packed_rows()
    script = Path(__file__).with_name("slm_ddp_script.py")
    done = run_torchrun(script, tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    for scope in ("sequence", "global"):
        expected = hand_update(student, ref, rows, scope=scope)
        state = torch.load(tmp_path / f"{scope}.pt")
        diff = max(float((state[n] - p.detach()).abs().max()) for n, p in expected.named_parameters())
        assert diff < TOL, scope


def test_token_cross_entropy_by_hand_and_its_gradient():
    """The shifted-target CE (no copy of the logits) equals the per-position formula, gradient included:
    token t is predicted from the logits at t - 1, and only valid positions (same document, trainable) count."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=gen, requires_grad=True)
    targets = torch.randint(0, 11, (2, 6), generator=gen)
    valid = torch.tensor([[0, 1, 1, 0, 1, 1], [0, 1, 0, 1, 1, 1]], dtype=torch.bool)  # 0 at doc starts
    got = SLMTrainer._token_cross_entropy(logits, targets, valid)
    logp = torch.log_softmax(logits.double(), -1)
    want = torch.zeros(2, 6, dtype=torch.float64)
    for b in range(2):
        for t in range(1, 6):
            if valid[b, t]:
                want[b, t] = -logp[b, t - 1, targets[b, t]]
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
    (grad,) = torch.autograd.grad((got * torch.arange(12.0).view(2, 6)).sum(), logits)
    (want_grad,) = torch.autograd.grad((want * torch.arange(12.0).view(2, 6)).sum(), logits)
    torch.testing.assert_close(grad, want_grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("scope", "ga"), [("sequence", 1), ("microbatch", 1), ("global", 1), ("global", 2)])
def test_nan_reference_losses_are_never_selected(scope, ga, tmp_path):
    """A precomputed ``ref_loss`` of NaN (no reference value: outside what a cross-tokenizer reference scored)
    takes the token out of the selection and of the count ``n``, in every scope; the update equals the hand
    computation on the remaining tokens. The NaN tokens are given the lowest reference loss (the highest
    excess): a selection that read them as numbers would take them first."""
    student, ref = student_and_reference()
    rows = packed_rows()
    ids = torch.tensor(rows["input_ids"])
    losses = per_token_loss(ref, ids, position_ids=torch.tensor(rows["position_ids"])).losses
    gen = torch.Generator().manual_seed(5)
    missing = torch.rand(ids.shape, generator=gen) < 0.3
    missing[:, -4:] = True  # a cut-off tail, as a truncated reference window leaves
    ref_losses = torch.where(missing, float("nan"), losses)
    dataset = dict(rows, ref_loss=ref_losses.tolist())
    trained, trainer = train_one_step(student, dataset, tmp_path, select_scope=scope, batch_size=4 // ga, ga=ga)
    expected = hand_update(
        student, None, rows, scope="sequence" if scope == "sequence" else "global", ref_losses=ref_losses
    )
    assert max_param_diff(trained, expected) < TOL
    logged = trainer.state.log_history[0]
    assert 0.6 <= logged["slm_selected_share"] < 0.7 and math.isfinite(logged["slm_excess_loss"])


def _top_global_by_hand(scores: torch.Tensor, valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """The global top ``ceil(ratio * n)`` of the valid, non-NaN scores, ties by position (written independently
    of the library's cut)."""
    flat, ok = scores.flatten().tolist(), (valid & ~torch.isnan(scores)).flatten().tolist()
    candidates = [i for i, keep in enumerate(ok) if keep]
    k = math.ceil(ratio * len(candidates) - 1e-9)
    chosen = set(sorted(candidates, key=lambda i: (-flat[i], i))[:k])
    return torch.tensor([i in chosen for i in range(len(flat))]).view(scores.shape)


def test_nan_scores_are_never_selected_by_the_selection_functions():
    from hf_select.slm.token_selection import select_top_tokens

    scores = torch.tensor([[float("nan"), 5.0, 1.0, float("nan"), 2.0, 0.0]])
    valid = torch.ones_like(scores, dtype=torch.bool)
    for selected in (
        select_top_tokens(scores, valid, 0.5, "sequence"),
        select_top_tokens(scores, valid, 0.5, "microbatch"),
        _top_global_by_hand(scores, valid, 0.5),
    ):
        assert selected.tolist() == [[False, True, False, False, True, False]]  # ceil(0.5 * 4) of 4 numbers


def test_global_ranking_with_accumulation_reads_the_trained_forward_under_dropout(tmp_path):
    """Global scope, excess loss, 2 micro-batches, dropout 0.1: the ranking forward runs in train mode with the
    random generators rewound, so the losses it ranks equal the training forwards' own losses, and the
    selection is the global top-k of exactly those (an eval-mode ranking would rank other losses)."""
    from hf_select.testing import tiny_model
    from hf_select.trainer_ext.slm_trainer import _SELECTED, _STUDENT

    seen = []

    class Recording(SLMTrainer):
        def _selective_loss(self, inputs, token_ce, valid):
            seen.append((inputs[_SELECTED], inputs[_STUDENT], token_ce.detach(), inputs["ref_loss"], valid))
            return super()._selective_loss(inputs, token_ce, valid)

    drop = {"resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}
    student, ref = tiny_model("gpt2", seed=0, **drop), tiny_model("gpt2", seed=1)
    rows = packed_rows()
    args = SLMConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=1,
        use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, seed=0, select_scope="global",
    )  # fmt: skip
    Recording(model=student.train(), args=args, ref_model=ref, train_dataset=Dataset.from_dict(rows)).train()
    assert len(seen) == 2
    selected, ranked, trained, ref_loss, valid = (torch.cat(x) for x in zip(*seen))
    assert torch.allclose(ranked[valid], trained[valid], atol=1e-5)  # the ranking forward is the trained one
    assert torch.equal(selected, _top_global_by_hand(trained - ref_loss, valid, 0.6))
    with torch.no_grad():  # dropout does act: an eval-mode forward gives other losses
        evaluated = per_token_loss(student.eval(), torch.tensor(rows["input_ids"]), position_ids=torch.tensor(rows["position_ids"])).losses
    assert (evaluated[valid] - trained[valid]).abs().max() > 1e-2
