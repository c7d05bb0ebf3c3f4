import json

import pytest
from datasets import Dataset, load_from_disk

from hf_select.attention_influence.retrieval_heads import RetrievalHeads
from hf_select.cli import main
from hf_select.testing import tiny_model, tiny_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
    "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n",
    "The integral of x squared is x cubed over three. 2 + 2 = 4, 3 * 7 = 21.",
    "Key: value pairs hold answers; the answer is 42. URL: www.example.com",
]
VALUES = [f"The quick fox {i} jumps over the dog." for i in range(30)]


def test_detect_score_select_from_the_command_line(tmp_path):
    model_dir = tmp_path / "model"
    tiny_model("llama", num_hidden_layers=3).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    Dataset.from_dict({"text": VALUES}).save_to_disk(str(tmp_path / "values"))
    docs = Dataset.from_dict({"body": TEXTS * 3, "domain": ["prose", "code", "math", "prose"] * 3})
    docs.save_to_disk(str(tmp_path / "docs"))
    heads_file = tmp_path / "heads.json"
    common = ["--model_name_or_path", str(model_dir)]
    assert (
        main(
            ["detect-heads", *common, "--values_dataset", str(tmp_path / "values"), "--num_samples", "2"]
            + [
                "--context_tokens",
                "400",
                "--key_length",
                "6",
                "--top_fraction",
                "0.1",
                "--output_file",
                str(heads_file),
            ]
            + ["--heatmap_file", str(tmp_path / "heads.png")]
        )
        == 0
    )
    heads = RetrievalHeads.load(heads_file)
    assert heads.scores.shape == (3, 4) and len(heads.selected) == 1 and (tmp_path / "heads.png").exists()
    out = tmp_path / "scores"
    args = ["score", "attention-influence", *common, "--dataset_name", str(tmp_path / "docs")]
    args += ["--text_column", "body", "--heads_file", str(heads_file), "--output_dir", str(out)]
    assert main([*args, "--max_length", "16", "--part_size", "5"]) == 0
    scored = load_from_disk(str(out / "scored"))
    assert len(scored) == 12 and scored["body"] == TEXTS * 3
    assert scored["ai_loss_base"][:4] == pytest.approx(scored["ai_loss_base"][4:8], rel=1e-4)  # same text
    assert len(list((out / "parts").glob("part-*.done"))) == 3
    sel = tmp_path / "sel"
    assert (
        main(
            [
                "select",
                "--scored_dataset",
                str(out / "scored"),
                "--fraction",
                "0.34",
                "--output_dir",
                str(sel),
                "--mix",
            ]
        )
        == 0
    )
    selected = load_from_disk(str(sel / "selected"))
    assert sorted(selected.unique("domain")) == ["code", "math", "prose"]
    assert len(selected) == 1 + 1 + 2  # round(0.34 * n) per domain: prose 6 -> 2, code 3 -> 1, math 3 -> 1
    assert len(load_from_disk(str(sel / "mix"))) == 12 + 4
    json.loads(heads_file.read_text())


def test_short_and_whitespace_documents_are_flagged_and_never_selected(tmp_path):
    import math

    from hf_select.attention_influence.scorer import flag_short_documents

    columns = {
        "text": ["a long enough document", "   \n", "tiny", "another long document"],
        "ai_score": [0.1, 9.0, 8.0, 0.2],  # the blank and the tiny one score highest (noise)
        "ai_num_tokens": [30, 20, 3, 40],
        "ai_too_short": [False, False, False, False],
    }
    scored = Dataset.from_dict(columns)
    flagged = flag_short_documents({k: list(v) for k, v in columns.items()}, 16, columns["text"])
    assert flagged["ai_too_short"] == [False, True, True, False]
    assert math.isnan(flagged["ai_score"][1]) and math.isnan(flagged["ai_score"][2])
    # a dataset scored before the flag existed: select masks flagged rows itself
    legacy = scored.remove_columns("ai_too_short").add_column("ai_too_short", [False, True, True, False])
    legacy.save_to_disk(str(tmp_path / "scored"))
    out = tmp_path / "sel"
    argv = ["select", "--scored_dataset", str(tmp_path / "scored"), "--by", "", "--fraction", "0.5"]
    assert main([*argv, "--output_dir", str(out)]) == 0
    assert load_from_disk(str(out / "selected"))["text"] == [
        "a long enough document",
        "another long document",
    ]
