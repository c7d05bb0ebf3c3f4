import json

from datasets import Dataset, DatasetDict, load_from_disk

from hf_select.demo import stage_attention_influence, stage_retrieval_heads
from hf_select.demo.context import DemoContext
from hf_select.testing import TINY_CORPUS, tiny_model, tiny_tokenizer


def _fake_world(tmp_path) -> DemoContext:
    ctx = DemoContext(tmp_path / "out", tmp_path / "cache", quick=True)
    tiny_tokenizer().save_pretrained(ctx.tokenizer_dir)
    tiny_model("llama", num_hidden_layers=4).save_pretrained(ctx.base_model_dir)
    sentences = [f"The quick fox {i} jumps over the dog." for i in range(40)]
    texts = [" ".join(sentences[i : i + 4]) for i in range(0, 40, 4)] + [
        TINY_CORPUS[:80],
        "def f(x):\n    return x\n",
    ] * 5
    domains = ["prose"] * 10 + ["code", "math"] * 5
    columns = {"text": texts, "domain": domains, "source": ["s"] * 20, "url": [f"u{i}" for i in range(20)]}
    columns |= {"title": ["t"] * 20, "license": ["l"] * 20}
    DatasetDict(
        {"train": Dataset.from_dict(columns), "heldout": Dataset.from_dict(columns).select(range(2))}
    ).save_to_disk(str(ctx.world_dir / "pretrain"))
    ctx.results["base_model"] = {"proxy_context_tokens": 400}
    return ctx


def test_stages_on_a_fake_world(tmp_path):
    ctx = _fake_world(tmp_path)
    heads = stage_retrieval_heads.run(ctx)
    ctx.results["retrieval_heads"] = json.loads(json.dumps(heads))
    assert len(heads["selected"]) == 1 and heads["proxy"]["key_length"] < 32  # shortened to fit the context
    assert "<img src='data:image/png;base64," in stage_retrieval_heads.report_html(ctx, heads)
    result = stage_attention_influence.run(ctx)
    scored = load_from_disk(result["scored_dataset"])
    assert len(scored) == 20 and {"ai_score", "ai_selected"} <= set(scored.column_names)
    assert result["per_domain"]["prose"]["selected"] == 2 and result["per_domain"]["code"]["selected"] == 1
    assert len(load_from_disk(result["selected_dataset"])) == 4
    page = stage_attention_influence.report_html(ctx, json.loads(json.dumps(result)))
    assert page.count("data:image/png;base64,") == 2
