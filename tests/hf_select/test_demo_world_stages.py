import json

import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoModelForCausalLM

from hf_select.demo import stage_base_model, stage_student_baseline, stage_world
from hf_select.demo.context import DemoContext
from hf_select.testing import TINY_WORDS as WORDS
from hf_select.testing import tiny_tokenizer


def sentence(i: int) -> str:
    return " ".join(WORDS[(i * k) % len(WORDS)] for k in (1, 3, 5, 7, 11)).capitalize() + f" {i}."


@pytest.fixture
def fake_world(tmp_path):
    ctx = DemoContext(tmp_path / "out", tmp_path / "cache", quick=True)
    rows = {c: [] for c in ("text", "domain", "source", "url", "title", "license")}
    for i in range(40):
        domain = ("prose", "code", "math")[i % 3]
        text = (
            " ".join(sentence(i * 5 + j) for j in range(5))
            if domain == "prose"
            else f"def f{i}(a, b):\n    return a + b\n" * 3
        )
        for key, value in zip(
            rows, (text, domain, f"src-{domain}", f"https://example.org/{i}", f"t{i}", "MIT")
        ):
            rows[key].append(value)
    data = Dataset.from_dict(rows)
    DatasetDict({"train": data.select(range(34)), "heldout": data.select(range(34, 40))}).save_to_disk(
        ctx.world_dir / "pretrain"
    )
    tiny_tokenizer().save_pretrained(ctx.tokenizer_dir)
    return ctx


def tiny_settings(ctx):
    return stage_base_model.BaseModelSettings(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        copy_steps=2, copy_batch_size=1, copy_seq_length=32, copy_distances=(4, 8), lookup_repeated_steps=1, lookup_steps=1,
        lookup_batch_size=2, seq_length=512, stream_documents=34, proxy_samples=3, proxy_context_tokens=512,
        proxy_key_length=6, max_value_tokens=30, train_max_value_tokens=30,
    )  # fmt: skip


def one_step_settings(ctx):
    settings = tiny_settings(ctx)
    settings.copy_steps, settings.copy_distances, settings.proxy_samples = 1, (4,), 1
    settings.lookup_batch_size, settings.lookup_repeated_steps = 1, 0
    return settings


def test_base_model_stage_trains_saves_and_measures_proxy_accuracy(fake_world, monkeypatch):
    ctx = fake_world
    monkeypatch.setattr(stage_base_model, "settings_for", one_step_settings)
    info = stage_base_model.run(ctx)
    model = AutoModelForCausalLM.from_pretrained(ctx.base_model_dir)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["training_rows"] == 2 and [p["name"] for p in info["phases"]] == ["copy-d4", "lookup"]
    assert (
        32 < info["training_tokens"] <= 32 + 512
        and 0 < info["trained_label_tokens"] < info["training_tokens"]
    )
    proxy = info["proxy"]
    assert proxy["samples"] == 1 and abs(proxy["chance_sample_accuracy"] - 1 / proxy["mean_pairs"]) < 1e-9


@pytest.mark.slow
def test_base_model_then_baseline_student(fake_world, monkeypatch):
    ctx = fake_world
    monkeypatch.setattr(stage_base_model, "settings_for", tiny_settings)
    info = stage_base_model.run(ctx)
    model = AutoModelForCausalLM.from_pretrained(ctx.base_model_dir)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["training_rows"] == 6 and len(info["phases"]) == 4
    assert [p["schedule"] for p in info["phases"]] == ["constant_with_warmup"] * 3 + ["linear"]
    assert 0 <= info["proxy"]["sample_accuracy"] <= 1 and 0 < info["proxy"]["chance_sample_accuracy"] < 0.5
    assert [step for step, _ in info["loss_curve"]] == [1, 2, 3, 4]
    assert "Proxy retrieval task" in stage_base_model.report_html(ctx, info)
    assert stage_base_model.run(ctx) == json.loads(json.dumps(info))  # reused, not retrained

    result = stage_student_baseline.run(ctx)
    saved = AutoModelForCausalLM.from_pretrained(ctx.students_dir / "baseline")
    assert saved.config.hidden_size == 32 and result["steps"] == ctx.student_settings.max_steps
    assert (
        json.loads((ctx.students_dir / "baseline/hf_select_student.json").read_text())["name"] == "baseline"
    )
    assert "<img src='data:image/png;base64," in stage_student_baseline.report_html(ctx, result)


def test_world_stage_summary_and_report(tmp_path, monkeypatch):
    manifest = {
        "origin": "quick world",
        "pretrain": {"domains": {"code": {"documents": 3, "chars": 2_000_000}}, "sources": {"cpython-stdlib": {"domain": "code", "license": "PSF-2.0", "train": 2, "heldout": 1, "duplicate": 0, "contaminated": 1, "chars": 2_000_000}}},
        "lowq": {"sources": {"cpython-tests": {"domain": "code", "license": "PSF-2.0", "train": 1, "heldout": 0, "duplicate": 0, "contaminated": 0, "chars": 10}}},
        "eval_tasks": {"arc_easy": {"type": "multiple_choice", "items": 100}},
        "finetune": {"train": 9, "heldout": 1, "sources": {"sympy-docstrings": {"tier": "medium", "pairs": 9}}},
        "tokenizer": {"vocab_size": 4096},
        "build_seconds": 1.0,
        "files": {"a": "b"},
    }  # fmt: skip
    monkeypatch.setattr("hf_select.dataset_scripts.demo_world.build_world", lambda *a, **k: manifest)
    ctx = DemoContext(tmp_path / "o", tmp_path / "c", quick=True)
    result = stage_world.run(ctx)
    assert result["domains"] == {"code": {"documents": 3, "MB": 2.0}} and result["total_MB"] == 2.0
    page = stage_world.report_html(ctx, result)
    assert "PSF-2.0" in page and "low-quality pool" in page and "arc_easy" in page


def test_report_overview_lists_every_stage_with_its_status(tmp_path):
    from hf_select.demo.runner import run_demo

    run_demo(DemoContext(tmp_path / "o", tmp_path / "c"), ("not_built_yet",))
    page = (tmp_path / "o/report.html").read_text()
    assert "<th>stage</th><th>status</th>" in page and "<td>not built yet</td><td>pending</td>" in page
