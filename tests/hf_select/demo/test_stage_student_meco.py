import json

import pytest

from hf_select.demo.runner import run_stage

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def split(offset: int, n: int = 60) -> dict:
    """Code documents ``offset .. offset + n`` with three URL hosts."""
    return {
        "text": [f"The answer is {i}. def add(a, b): return a + b" for i in range(offset, offset + n)],
        "domain": ["code"] * n,
        "source": ["cpython"] * n,
        "url": [f"https://docs.site{i % 3}.org/{i}" for i in range(offset, offset + n)],
        "title": [str(i) for i in range(n)],
        "license": ["PSF"] * n,
    }


def test_meco_stage_trains_saves_and_reports_on_a_fake_world(fake_world):
    ctx = fake_world(pretrain=split(0), heldout=split(1000))
    outcome = run_stage(ctx, "student_meco")
    assert outcome.status == "done", outcome.error
    result = outcome.result
    steps = ctx.student_settings.max_steps
    assert result["steps"] == steps and result["cooldown_steps"] >= 1
    assert result["conditioned_steps"] + result["cooldown_steps"] == steps
    assert len(result["per_seed"]) == len(ctx.student_settings.seeds)
    for key in ("heldout_bits_per_byte", "own_url_bits_per_byte", "unrelated_url_bits_per_byte"):
        values = result[key]["values"]
        assert len(values) == len(ctx.student_settings.seeds) and all(0 < v < 100 for v in values)
    # the own-URL and unrelated-URL numbers score the same characters with different prefixes
    assert result["own_url_bits_per_byte"]["values"] != result["unrelated_url_bits_per_byte"]["values"]
    saved = ctx.students_dir / "meco"
    assert (saved / "model.safetensors").exists()
    assert json.loads((saved / "hf_select_student.json").read_text())["name"] == "meco"
