import json

from hf_select.demo import stage_student_opus
from hf_select.demo.context import DemoContext, StudentSettings
from hf_select.testing import TINY_CORPUS


def _world(fake_world):
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
    return fake_world(
        pretrain=train,
        heldout=schema(docs[:4], "prose"),
        lowq=schema(["zz qq " * 40] * 6, "lowq"),
        eval_tasks={
            "t.train.jsonl": json.dumps({"query": "The quick brown fox", "choices": ["jumps"], "gold": 0}),
            "t.yaml": "name: t\ntype: multiple_choice\nsplit: test\ndata_files:\n  train: t.train.jsonl\n",
        },
    )


def test_opus_student_stage_quick(fake_world, monkeypatch):
    small = StudentSettings(
        seq_length=64, batch_size=4, max_steps=3, seeds=(0, 1), hidden_size=32, num_layers=2
    )
    monkeypatch.setattr(DemoContext, "student_settings", property(lambda self: small))
    ctx = _world(fake_world)
    result = stage_student_opus.run(ctx)
    assert (ctx.students_dir / "opus" / "model.safetensors").exists()
    assert len(result["per_seed"]) == 2
    first = result["per_seed"][0]
    assert first["candidates_per_step"] == 2 * small.batch_size
    assert set(first["domain_shares"]) == {"prose", "code", "lowq"}
    assert abs(sum(v["selected"] for v in first["domain_shares"].values()) - 1) < 1e-6
    assert "benchmark" in result["proxy_source"]
    assert "share selected" in stage_student_opus.report_html(ctx, result)
    assert json.loads(json.dumps(result, allow_nan=False)) == result  # strict JSON, no tuples or numpy
