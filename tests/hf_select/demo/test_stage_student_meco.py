import json

import pytest
import torch
from datasets import Dataset, DatasetDict

from hf_select.demo.context import DemoContext
from hf_select.demo.runner import run_stage
from hf_select.testing import tiny_model, tiny_tokenizer


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fake_world(ctx: DemoContext, n: int = 60) -> None:
    """The documented world layout, in miniature: tokenizer, base model, pretrain train/heldout."""
    tiny_tokenizer().save_pretrained(ctx.tokenizer_dir)
    tiny_model("llama").save_pretrained(ctx.model_dir)
    tiny_tokenizer().save_pretrained(ctx.model_dir)

    def split(offset):
        return Dataset.from_dict(
            {
                "text": [
                    f"The answer is {i}. def add(a, b): return a + b" for i in range(offset, offset + n)
                ],
                "domain": ["code"] * n,
                "source": ["cpython"] * n,
                "url": [f"https://docs.site{i % 3}.org/{i}" for i in range(offset, offset + n)],
                "title": [str(i) for i in range(n)],
                "license": ["PSF"] * n,
            }
        )

    DatasetDict({"train": split(0), "heldout": split(1000)}).save_to_disk(str(ctx.world_dir / "pretrain"))


def test_meco_stage_trains_saves_and_reports_on_a_fake_world(tmp_path):
    ctx = DemoContext(tmp_path / "out", tmp_path / "cache", quick=True)
    fake_world(ctx)
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
