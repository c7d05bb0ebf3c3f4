"""The README's pipeline (detect-heads -> score -> select --mix -> train slm) runs as written on a tiny model,
and ``train slm`` sees exactly the intended rows (before: 4,200 rows, the selection and the mix together)."""

import re
import shlex
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk

from hf_select.cli import main
from hf_select.loading import load_any_dataset
from hf_select.testing import TINY_CORPUS, tiny_model, tiny_tokenizer

README = Path(__file__).resolve().parents[3] / "README.md"


def _quick_start_commands() -> list[list[str]]:
    text = README.read_text()
    block = text.split("## Quick start on a GPU with the Hub", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    block = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("torchrun"):
            line = "hf-select " + line.split("-m hf_select.cli", 1)[1]
        if line.startswith("hf-select") and "--help" not in line:
            commands.append(shlex.split(line)[1:])
    return commands


def _option(argv, name):
    return argv[argv.index(name) + 1]


def _replace(argv, name, value):
    argv = list(argv)
    argv[argv.index(name) + 1] = value
    return argv


def _drop(argv, name):
    argv = list(argv)
    i = argv.index(name)
    del argv[i : i + 2]
    return argv


@pytest.mark.slow  # ~30 s: four commands on a tiny model
def test_readme_quick_start_runs_and_trains_on_the_mix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model"
    tiny_model("llama", num_hidden_layers=3).save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    sentences = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()]
    docs = [" ".join(sentences[i : i + 3]) for i in range(len(sentences))] * 2
    Dataset.from_dict({"text": docs, "domain": ["a", "b"] * (len(docs) // 2)}).save_to_disk("corpus")
    Dataset.from_dict({"text": [f"The quick fox {i} jumps over the dog." for i in range(30)]}).save_to_disk(
        "values"
    )
    commands = _quick_start_commands()
    assert [c[0] for c in commands] == ["detect-heads", "score", "select", "train", "eval"]
    detect, score, select, train, _ = commands  # eval needs task files: tested in tests/eval
    detect = _replace(_replace(detect, "--model_name_or_path", str(model)), "--values_dataset", "values")
    detect += ["--num_samples", "2", "--context_tokens", "400", "--key_length", "6", "--top_fraction", "0.1"]
    score = _drop(_replace(score, "--dataset_name_or_path", "corpus"), "--dataset_config")
    score = _replace(score, "--model_name_or_path", str(model)) + ["--max_length", "16", "--min_tokens", "2"]
    train = _replace(
        _replace(train, "--model_name_or_path", str(model)), "--ref_model_name_or_path", str(model)
    )
    train += ["--seq_length", "32", "--max_steps", "1", "--use_cpu", "--report_to", "none"]
    train += ["--save_strategy", "no", "--per_device_train_batch_size", "2"]
    for argv in (detect, score, select, train):
        assert main(argv) == 0, argv
    mix_dir = _option(train, "--dataset_name_or_path")
    mix = load_from_disk(mix_dir)
    selected = load_from_disk(str(Path(_option(select, "--output_dir")) / "selected"))
    assert len(mix) == len(docs) + len(selected)  # the corpus plus one extra copy of the selection
    assert (Path(_option(train, "--output_dir")) / "model.safetensors").exists()
    # the output folder itself reads as the mix, never as selection + mix concatenated
    assert load_any_dataset(_option(select, "--output_dir"))["text"] == mix["text"]
    assert len(load_any_dataset(_option(score, "--output_dir"))) == len(docs)
