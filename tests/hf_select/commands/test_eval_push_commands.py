import json

from datasets import load_dataset

from hf_select.cli import main
from hf_select.testing import tiny_model, tiny_tokenizer


def _model_folder(tmp_path):
    folder = tmp_path / "model"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_eval_command_writes_results_and_prints_table(tmp_path, capsys):
    records = [
        {"query": f"Question {i}?\nAnswer:", "choices": ["yes", "no way"], "gold": i % 2} for i in range(4)
    ]
    (tmp_path / "yn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "yn.yaml").write_text("name: yn\ntype: multiple_choice\ndata_files:\n  test: yn.jsonl\n")
    code = main(
        [
            "eval",
            "--model_name_or_path",
            str(_model_folder(tmp_path)),
            "--tasks",
            str(tmp_path / "yn.yaml"),
            "--limit",
            "3",
            "--output_dir",
            str(tmp_path / "res"),
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "res/results.json").read_text())
    assert results["results"]["yn"]["num_items"] == 3
    assert "| yn | acc |" in capsys.readouterr().out


def test_push_command_writes_local_hub_layout(tmp_path, capsys):
    rows = [{"text": f"doc {i}", "ai_score": i / 10} for i in range(20)]
    (tmp_path / "scored.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(
        [
            "push",
            "--kind",
            "dataset",
            "--source",
            str(tmp_path / "scored.jsonl"),
            "--score_column",
            "ai_score",
            "--thresholds",
            "1",
            "--local_dir",
            str(tmp_path / "pub"),
            "--method",
            "attention_influence",
            "--params",
            '{"k": 2}',
        ]
    )
    assert code == 0 and "published:" in capsys.readouterr().out
    part = load_dataset(str(tmp_path / "pub"), "int_score_ge_1", split="train")
    assert sorted(part["score"]) == [r["ai_score"] for r in rows if round(r["ai_score"]) >= 1]
