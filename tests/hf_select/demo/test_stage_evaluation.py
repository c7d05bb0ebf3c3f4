import json

from datasets import Dataset, load_dataset

from hf_select.demo import stage_evaluation


def _world(fake_world, tmp_path):
    mc = [
        {"query": f"Question {i}?\nAnswer:", "choices": ["yes", "no", "maybe"], "gold": i % 3}
        for i in range(6)
    ]
    docs = [
        {"text": "def add(a, b):\n    return a + b", "domain": "code"},
        {"text": "The quick fox.", "domain": "web"},
    ]
    ctx = fake_world(
        students={"baseline": {}, "meco": {"eval_prefix": "URL: www.quiz.com\n\n"}},
        eval_tasks={
            "yn.jsonl": mc,
            "yn.yaml": "name: yn\ntype: multiple_choice\ndata_files:\n  test: yn.jsonl\n",
            "heldout.jsonl": docs,
            "heldout.yaml": "name: heldout\ntype: perplexity\ndata_files:\n  test: heldout.jsonl\n",
        },
    )
    scored = Dataset.from_dict(
        {
            "text": [f"d{i}" for i in range(30)],
            "domain": ["web", "code"] * 15,
            "ai_score": [i / 30 for i in range(30)],
        }
    )
    scored.save_to_disk(str(tmp_path / "ai_scored"))
    ctx.results["attention_influence"] = {
        "scored_dataset": str(tmp_path / "ai_scored"),
        "heads": [[1, 2]],
        "top_k": 3,
    }
    return ctx


def test_stage_evaluates_base_and_students_and_publishes_scores(fake_world, tmp_path):
    ctx = _world(fake_world, tmp_path)
    result = stage_evaluation.run(ctx)
    names = [row[0] for row in result["table"]["rows"]]
    assert names == [stage_evaluation.PRETRAINED_NAME, "baseline", "meco", "meco + prefix"]
    assert {"yn acc", "yn acc_norm", "heldout bits_per_byte"} <= set(result["table"]["header"])
    assert result["results"]["meco"]["yn"]["num_items"] == stage_evaluation.QUICK_LIMIT
    heldout = result["results"][stage_evaluation.PRETRAINED_NAME]["heldout"]
    assert "domains" in heldout and heldout["num_items"] == stage_evaluation.PERPLEXITY_LIMIT[True]
    assert result["lm_eval_agreement"]["status"].startswith(("not computed", "computed"))
    assert json.loads(json.dumps(result, allow_nan=False)) == result  # strict JSON, no tuples or numpy
    folder = result["scored_dataset"]["folder"]
    top = load_dataset(folder, "int_score_ge_8", split="train")
    assert len(top) == 6 and min(top["score"]) >= 0.8 - 1e-9
    html = stage_evaluation.report_html(ctx, result)
    assert "<td>meco + prefix</td>" in html and "data:image/png;base64," in html
