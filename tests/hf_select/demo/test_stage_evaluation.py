import json

from datasets import Dataset, load_dataset

from hf_select.demo import stage_evaluation
from hf_select.demo.context import DemoContext
from hf_select.testing import tiny_model, tiny_tokenizer


def _fake_world(tmp_path):
    ctx = DemoContext(tmp_path / "out", tmp_path / "cache", quick=True)
    tok = tiny_tokenizer()
    tok.save_pretrained(ctx.tokenizer_dir)
    tiny_model("llama", seed=0).save_pretrained(ctx.model_dir)
    tok.save_pretrained(ctx.model_dir)
    for i, name in enumerate(["baseline", "meco"]):
        folder = ctx.students_dir / name
        tiny_model("llama", seed=i + 1).save_pretrained(folder)
        extra = {"name": name, **({"eval_prefix": "URL: www.quiz.com\n\n"} if name == "meco" else {})}
        (folder / "hf_select_student.json").write_text(json.dumps(extra))
    tasks = ctx.world_dir / "eval_tasks"
    tasks.mkdir(parents=True)
    mc = [
        {"query": f"Question {i}?\nAnswer:", "choices": ["yes", "no", "maybe"], "gold": i % 3}
        for i in range(6)
    ]
    (tasks / "yn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
    (tasks / "yn.yaml").write_text("name: yn\ntype: multiple_choice\ndata_files:\n  test: yn.jsonl\n")
    docs = [
        {"text": "def add(a, b):\n    return a + b", "domain": "code"},
        {"text": "The quick fox.", "domain": "web"},
    ]
    (tasks / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in docs))
    (tasks / "heldout.yaml").write_text(
        "name: heldout\ntype: perplexity\ndata_files:\n  test: heldout.jsonl\n"
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


def test_stage_evaluates_base_and_students_and_publishes_scores(tmp_path):
    ctx = _fake_world(tmp_path)
    result = stage_evaluation.run(ctx)
    names = [row[0] for row in result["table"]["rows"]]
    assert names == [stage_evaluation.PRETRAINED_NAME, "baseline", "meco", "meco + prefix"]
    assert {"yn acc", "yn acc_norm", "heldout bits_per_byte"} <= set(result["table"]["header"])
    assert result["results"]["meco"]["yn"]["num_items"] == stage_evaluation.QUICK_LIMIT
    heldout = result["results"][stage_evaluation.PRETRAINED_NAME]["heldout"]
    assert "domains" in heldout and heldout["num_items"] == stage_evaluation.PERPLEXITY_LIMIT[True]
    assert result["lm_eval_agreement"]["status"].startswith(("not computed", "computed"))
    assert json.dumps(result)  # JSON-ready
    folder = result["scored_dataset"]["folder"]
    top = load_dataset(folder, "int_score_ge_8", split="train")
    assert len(top) == 6 and min(top["score"]) >= 0.8 - 1e-9
    html = stage_evaluation.report_html(ctx, result)
    assert "<td>meco + prefix</td>" in html and "data:image/png;base64," in html
