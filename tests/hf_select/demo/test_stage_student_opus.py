import json

from datasets import Dataset, DatasetDict

from hf_select.demo import stage_student_opus
from hf_select.demo.context import DemoContext, StudentSettings
from hf_select.testing import TINY_CORPUS, tiny_model, tiny_tokenizer


def _fake_world(ctx):
    world = ctx.world_dir
    tiny_tokenizer().save_pretrained(world / "tokenizer")
    tiny_model("llama").save_pretrained(ctx.model_dir)
    tiny_tokenizer().save_pretrained(ctx.model_dir)
    sentences = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()]
    schema = lambda texts, domain: {  # noqa: E731
        "text": texts,
        "domain": [domain] * len(texts),
        "source": ["t"] * len(texts),
        "url": ["u"] * len(texts),
        "title": ["x"] * len(texts),
        "license": ["l"] * len(texts),
    }
    docs = [" ".join(sentences[i % len(sentences) :] * 2) for i in range(12)]
    train = {k: a + b for (k, a), b in zip(schema(docs, "prose").items(), schema(docs, "code").values())}
    DatasetDict(
        {"train": Dataset.from_dict(train), "heldout": Dataset.from_dict(schema(docs[:4], "prose"))}
    ).save_to_disk(str(world / "pretrain"))
    Dataset.from_dict(schema(["zz qq " * 40] * 6, "lowq")).save_to_disk(str(world / "lowq"))
    tasks = world / "eval_tasks"
    tasks.mkdir(parents=True)
    (tasks / "t.train.jsonl").write_text(
        json.dumps({"query": "The quick brown fox", "choices": ["jumps"], "gold": 0})
    )
    (tasks / "t.yaml").write_text(
        "name: t\ntype: multiple_choice\nsplit: test\ndata_files:\n  train: t.train.jsonl\n"
    )


def test_opus_student_stage_quick(tmp_path, monkeypatch):
    small = StudentSettings(
        seq_length=64, batch_size=4, max_steps=3, seeds=(0, 1), hidden_size=32, num_layers=2
    )
    monkeypatch.setattr(DemoContext, "student_settings", property(lambda self: small))
    ctx = DemoContext(tmp_path / "out", tmp_path / "cache", quick=True)
    _fake_world(ctx)
    result = stage_student_opus.run(ctx)
    assert (ctx.students_dir / "opus" / "model.safetensors").exists()
    assert len(result["per_seed"]) == 2
    first = result["per_seed"][0]
    assert first["candidates_per_step"] == 2 * small.batch_size
    assert set(first["domain_shares"]) == {"prose", "code", "lowq"}
    assert abs(sum(v["selected"] for v in first["domain_shares"].values()) - 1) < 1e-6
    assert "benchmark" in result["proxy_source"]
    assert "share selected" in stage_student_opus.report_html(ctx, result)
    json.dumps(result)
