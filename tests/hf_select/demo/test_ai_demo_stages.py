import json
from dataclasses import replace

import pytest
from datasets import load_from_disk
from figure_checks import embedded_pngs, is_drawn

from hf_select.demo import stage_attention_influence, stage_retrieval_heads
from hf_select.demo.context import DemoContext
from hf_select.testing import TINY_CORPUS


def _world(fake_world) -> DemoContext:
    sentences = [f"The quick fox {i} jumps over the dog." for i in range(40)]
    texts = [" ".join(sentences[i : i + 4]) for i in range(0, 40, 4)] + [
        TINY_CORPUS[:80],
        "def f(x):\n    return x\n",
    ] * 5
    domains = ["prose"] * 10 + ["code", "math"] * 5
    columns = {"text": texts, "domain": domains, "source": ["s"] * 20, "url": [f"u{i}" for i in range(20)]}
    columns |= {"title": ["t"] * 20, "license": ["l"] * 20}
    return fake_world(model_overrides={"num_hidden_layers": 4}, pretrain=columns, heldout=2)


def test_stages_on_a_fake_world(fake_world, monkeypatch):
    # the tiny tokenizer is near character level: allow the fake world's sentences as values
    monkeypatch.setattr(
        stage_retrieval_heads,
        "QUICK",
        replace(stage_retrieval_heads.QUICK, max_value_tokens=80, context_tokens=480),
    )
    ctx = _world(fake_world)
    heads = stage_retrieval_heads.run(ctx)
    ctx.results["retrieval_heads"] = json.loads(json.dumps(heads))
    settings = stage_retrieval_heads.QUICK
    assert len(heads["selected"]) == 1 and heads["proxy"]["key_length"] == settings.key_length
    check = heads["masking_check"]
    assert len(check["random_draws"]) == settings.random_draws
    assert all(
        d["heads"] != heads["selected"] for d in check["random_draws"]
    )  # other heads than the top ones
    for which in ("top", "random"):
        for key, drop in check["relative_drop"][which].items():
            base = check["none"][key]
            assert drop is None if base == 0 else drop == pytest.approx(1 - check[which][key] / base)
    page = stage_retrieval_heads.report_html(ctx, heads)
    assert "<img src='data:image/png;base64," in page and "no head masked" in page
    assert [is_drawn(uri) for uri in embedded_pngs(page)] == [True]  # one heatmap, drawn
    result = stage_attention_influence.run(ctx)
    scored = load_from_disk(result["scored_dataset"])
    per_domain = ctx.student_settings.pool_documents_per_domain
    assert len(scored) == per_domain + 5 + 5  # prose capped at the pool size; code and math have 5 each
    assert {"ai_score", "ai_selected", "doc_chars", "ref_loss"} <= set(scored.column_names)
    # the base pass read every document whole: each carries the SLM reference losses of the students' tokens
    assert result["reference_losses_documents"] == len(scored)
    assert all(len(r) > 2 for r in scored["ref_loss"])
    assert (
        result["per_domain"]["code"]["selected"] == 1
        and result["per_domain"]["prose"]["documents"] == per_domain
    )
    for domain, s in result["per_domain"].items():
        rows = scored.filter(lambda d, n=domain: d == n, input_columns="domain")
        chosen = [c for c, f in zip(rows["doc_chars"], rows["ai_selected"]) if f]
        rest = [c for c, f in zip(rows["doc_chars"], rows["ai_selected"]) if not f]
        assert s["length_ratio"] == pytest.approx(
            (sum(chosen) / len(chosen)) / (sum(rest) / len(rest)), rel=1e-3
        )
    page = stage_attention_influence.report_html(ctx, json.loads(json.dumps(result)))
    assert page.count("data:image/png;base64,") == 1 and "rejected" in page
    assert all(is_drawn(uri) for uri in embedded_pngs(page))
