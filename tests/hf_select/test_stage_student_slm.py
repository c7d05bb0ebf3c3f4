import json

import pytest
from datasets import Dataset, DatasetDict

from hf_select.demo.context import DemoContext
from hf_select.demo.runner import run_stage
from hf_select.testing import TINY_CORPUS, tiny_model, tiny_tokenizer


def fake_world(ctx: DemoContext) -> None:
    """The documented world layout with a tiny tokenizer, a tiny base model and a few documents."""
    tiny_tokenizer().save_pretrained(ctx.tokenizer_dir)
    tiny_model("llama").save_pretrained(ctx.base_model_dir)
    docs = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()] * 8
    meta = {"domain": "prose", "source": "test", "url": "", "title": "", "license": "MIT"}
    split = Dataset.from_list([{"text": d, **meta} for d in docs])
    DatasetDict({"train": split, "heldout": split.select(range(4))}).save_to_disk(ctx.world_dir / "pretrain")


def test_report_of_a_finished_stage():
    from hf_select.demo.stage_student_slm import report_html

    history = [
        {"step": s, "slm_loss_selected": 6 - s, "slm_loss_unselected": 5 - s, "slm_ref_loss": 3}
        for s in (1, 2)
    ]
    page = report_html(None, {"steps": 2, "final_selected_share": 0.6, "history": history})
    assert "<table>" in page and "data:image/png;base64," in page


@pytest.mark.slow  # ~10-30 s: tokenises, packs and trains 12 steps
def test_stage_trains_and_saves_the_slm_student(tmp_path):
    ctx = DemoContext(tmp_path / "out", tmp_path / "cache", quick=True)
    fake_world(ctx)
    outcome = run_stage(ctx, "student_slm")
    assert outcome.status == "done", outcome.error
    result = outcome.result
    assert result["steps"] == ctx.student_settings.max_steps
    assert 0.6 <= result["final_selected_share"] < 0.7
    saved = ctx.students_dir / "slm"
    assert (saved / "model.safetensors").exists()
    assert json.loads((saved / "hf_select_student.json").read_text())["name"] == "slm"
    from hf_select.demo.stage_student_slm import report_html

    assert "<table>" in report_html(ctx, result)
