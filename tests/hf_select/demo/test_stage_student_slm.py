import json

import pytest

from hf_select.demo.runner import run_stage
from hf_select.testing import TINY_CORPUS


def documents() -> list[dict]:
    """A few documents in the world schema."""
    docs = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()] * 8
    meta = {"domain": "prose", "source": "test", "url": "", "title": "", "license": "MIT"}
    return [{"text": d, **meta} for d in docs]


def _result(history):
    seed = {"seed": 0, "heldout_bits_per_byte": 3.0, "final_loss_selected": 6.0, "final_loss_unselected": 5.0}
    return {
        "reference": "r", "reference_rows": 4, "reference_seconds": 1.0, "reference_mean_token_loss": 2.0,
        "token_select_ratio": 0.6, "select_scope": "global", "seeds": [0], "steps": 2, "update_tokens": 64,
        "heldout_documents": 4, "heldout_bits_per_byte": {"mean": 3.0, "std": 0.0, "values": [3.0]},
        "per_seed": [{**seed, "history": history}],
    }  # fmt: skip


def test_report_of_a_finished_stage():
    from hf_select.demo.stage_student_slm import report_html

    history = [
        {"step": s, "slm_loss_selected": 6 - s, "slm_loss_unselected": 5 - s, "slm_ref_loss": 3}
        for s in (1, 2)
    ]
    page = report_html(None, _result(history))
    assert "3.0 &plusmn; 0.0" in page and "data:image/png;base64," in page


@pytest.mark.slow  # ~20-40 s: cross-tokenizer reference losses, then 3 seeds x 6 steps
def test_stage_trains_and_saves_the_slm_student(fake_world):
    ctx = fake_world(pretrain=documents(), heldout=4)
    outcome = run_stage(ctx, "student_slm")
    assert outcome.status == "done", outcome.error
    result = outcome.result
    assert result["steps"] == ctx.student_settings.max_steps and len(result["per_seed"]) == 3
    assert result["reference_rows"] > 0 and result["reference_mean_token_loss"] > 0
    for seed in result["per_seed"]:
        assert seed["final_loss_selected"] > seed["final_loss_unselected"]  # selection picks high excess loss
    saved = ctx.students_dir / "slm"
    assert (saved / "model.safetensors").exists()
    assert json.loads((saved / "hf_select_student.json").read_text())["name"] == "slm"
