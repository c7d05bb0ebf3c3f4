import json

import numpy as np
import pytest
import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM

from hf_select.cli import main
from hf_select.testing import tiny_model, tiny_tokenizer


def _model_folder(tmp_path):
    folder = tmp_path / "model"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def _hand_loglik(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context) from one unpadded forward pass of the full text."""
    ctx = tokenizer(context).input_ids
    ids = tokenizer(context + continuation).input_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].double(), -1)
    return sum(logp[p - 1, ids[p]].item() for p in range(len(ctx), len(ids)))


def test_eval_command_scores_equal_a_forward_pass_by_hand(tmp_path, capsys):
    records = [
        {"query": f"Question {i}?\nAnswer:", "choices": ["yes", "no way"], "gold": i % 2} for i in range(4)
    ]
    (tmp_path / "yn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "yn.yaml").write_text("name: yn\ntype: multiple_choice\ndata_files:\n  test: yn.jsonl\n")
    folder = _model_folder(tmp_path)
    argv = ["eval", "--model_name_or_path", str(folder), "--tasks", str(tmp_path / "yn.yaml"), "--limit", "3",
            "--log_samples", "--output_dir", str(tmp_path / "res")]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((tmp_path / "res/results.json").read_text())
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), tiny_tokenizer()
    hand = [[_hand_loglik(model, tokenizer, r["query"], " " + c) for c in r["choices"]] for r in records[:3]]
    samples = results["samples"]["yn"]
    assert [s["doc_id"] for s in samples] == [0, 1, 2]
    np.testing.assert_allclose([s["loglikelihoods"] for s in samples], hand, atol=2e-4)
    acc = np.mean([np.argmax(h) == r["gold"] for h, r in zip(hand, records)])
    assert results["results"]["yn"]["num_items"] == 3
    assert results["results"]["yn"]["acc"] == pytest.approx(acc)
    assert f"| yn | acc | {acc:.4f}" in capsys.readouterr().out


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
