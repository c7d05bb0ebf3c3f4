import json

import pytest
from datasets import Dataset, DatasetDict

from hf_select.cli import main
from hf_select.data_whisperer.scorer import DataWhisperer
from hf_select.testing import tiny_model, tiny_tokenizer


@pytest.fixture
def world(tmp_path):
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    rows = {"question": [f"What is {i} + {i}?" for i in range(12)], "answer": [str(2 * i) for i in range(12)]}
    DatasetDict(
        {"train": Dataset.from_dict(rows), "heldout": Dataset.from_dict(rows).select(range(3))}
    ).save_to_disk(tmp_path / "data")
    return tmp_path


@pytest.mark.slow
def test_score_then_finetune_commands(world, monkeypatch, capsys):
    monkeypatch.setattr(DataWhisperer, "generate_fn", staticmethod(lambda ids: " 0\nAnswer 2: 2"))
    model = str(world / "model")
    rc = main(
        [
            "score",
            "data-whisperer",
            "--model_name_or_path",
            model,
            "--dataset_name_or_path",
            str(world / "data"),
            "--output_dir",
            str(world / "scored"),
            "--n_demos",
            "3",
            "--n_queries",
            "2",
            "--select_fraction",
            "0.25",
        ]
    )
    assert rc == 0
    selection = json.loads((world / "scored" / "selection.json").read_text())
    assert len(selection["selected_indices"]) == 3 and selection["selection_seconds"] > 0
    rc = main(
        [
            "finetune",
            "--model_name_or_path",
            model,
            "--dataset_name_or_path",
            str(world / "scored"),
            "--heldout_name_or_path",
            str(world / "data"),
            "--fraction",
            "0.25",
            "--max_generate",
            "1",
            "--output_dir",
            str(world / "ft"),
            "--max_steps",
            "1",
            "--use_cpu",
            "true",
            "--lora_r",
            "2",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
        ]
    )
    assert rc == 0
    comparison = json.loads((world / "ft" / "comparison.json").read_text())
    assert comparison["selected"]["size"] == comparison["random"]["size"] == 3
    assert "STR" in capsys.readouterr().out


def test_finetune_command_errors(world):
    with pytest.raises(ValueError, match="no score column 'dw_score'"):
        main(
            [
                "finetune",
                "--model_name_or_path",
                str(world / "model"),
                "--dataset_name_or_path",
                str(world / "data"),
                "--output_dir",
                str(world / "ft"),
                "--debug",  # raise instead of the one-line error
            ]
        )


def test_score_command_quick(world, monkeypatch):
    monkeypatch.setattr(DataWhisperer, "generate_fn", staticmethod(lambda ids: " 0\nAnswer 2: 2"))
    rc = main(
        [
            "score",
            "data-whisperer",
            "--model_name_or_path",
            str(world / "model"),
            "--dataset_name_or_path",
            str(world / "data"),
            "--output_dir",
            str(world / "scored"),
            "--n_demos",
            "3",
            "--n_queries",
            "2",
        ]
    )
    assert rc == 0
    from datasets import load_from_disk

    scored = load_from_disk(str(world / "scored" / "dataset"))
    assert len(scored) == 12 and all(s >= 0 for s in scored["dw_score"])  # no NaN: every prompt parsed


def _score(world, *extra):
    return main(
        ["score", "data-whisperer", "--model_name_or_path", str(world / "model"), "--dataset_name_or_path",
         str(world / "data"), "--output_dir", str(world / "scored"), "--n_demos", "3", "--n_queries", "2", *extra]
    )  # fmt: skip


def test_score_command_parses_the_config_and_reports_a_cache_hit(world, monkeypatch, capsys):
    """The CLI parses DataWhispererConfig (--use_chat_template included); a cached re-run says so and records no
    selection wall-clock (no STR from a cache hit)."""
    from hf_select.commands.score_data_whisperer import CONFIG_CLASSES
    from hf_select.data_whisperer import DataWhispererConfig

    seen = []
    original = DataWhisperer.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.config)

    monkeypatch.setattr(DataWhisperer, "__init__", spy)
    monkeypatch.setattr(DataWhisperer, "generate_fn", staticmethod(lambda ids: " 0\nAnswer 2: 2"))
    assert DataWhispererConfig in CONFIG_CLASSES
    assert _score(world, "--use_chat_template", "false", "--answer_budget_factor", "2.5") == 0
    assert seen[-1] == DataWhispererConfig(
        n_demos=3, n_queries=2, use_chat_template=False, answer_budget_factor=2.5
    )
    first = json.loads((world / "scored" / "selection.json").read_text())
    assert first["cached"] is False and first["selection_seconds"] > 0 and first["stats"]["groups"] == 4
    assert "loaded from the datasets cache" not in capsys.readouterr().out
    assert _score(world, "--use_chat_template", "false", "--answer_budget_factor", "2.5") == 0
    second = json.loads((world / "scored" / "selection.json").read_text())
    assert second["cached"] is True and second["selection_seconds"] is None
    assert (
        second["selected_indices"] == first["selected_indices"]
        and second["fingerprint"] == first["fingerprint"]
    )
    assert "loaded from the datasets cache" in capsys.readouterr().out
    assert _score(world, "--use_chat_template", "false") == 0  # another setting: scored again
    assert json.loads((world / "scored" / "selection.json").read_text())["cached"] is False
