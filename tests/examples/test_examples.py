"""The four scripts of examples/ document every option; three run end to end here on tiny models (slow: ~1-2
minutes together on 2 cores; the datatrove one is the pipeline tests/hf_select/datatrove runs).

(a) and (b) are loaded from their files and driven through their own ``HfArgumentParser`` with command-line
style arguments, so the parsing a user meets is tested too; (c) runs under ``accelerate launch`` with two CPU
processes and must give the single-process numbers.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from datasets import load_dataset
from transformers import HfArgumentParser

from hf_select.testing import TINY_CORPUS, TINY_WORDS, free_port, tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_documents_its_options(script, capsys):
    """``--help`` works (argparse formats each help string with ``%``) and every option has a help text."""
    module = _load(script.stem)
    parser = HfArgumentParser(module.ScriptArguments)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    for f in dataclasses.fields(module.ScriptArguments):
        assert f.metadata.get("help") and f"--{f.name}" in shown, f.name


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _save_tiny(folder: Path, seed: int = 0, **overrides) -> str:
    tiny_model("llama", seed=seed, **overrides).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def _documents(path: Path, n: int = 24) -> str:
    words = list(TINY_WORDS)
    rows = [
        {"text": " ".join(words[i % 7 : i % 7 + 6]) + ". " + " ".join(words[i % 5 : i % 5 + 5]) + ".",
         "domain": ["prose", "code"][i % 2]}
        for i in range(n)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.slow
def test_attention_influence_select_push(tmp_path):
    # The folder gets a unique name: datasets 5 caches a local Hub-layout folder under its base name, so two
    # folders named alike load each other's rows (docs/evaluation.md).
    example = _load("attention_influence_select_push")
    model = _save_tiny(tmp_path / "model", num_hidden_layers=4)
    argv = [
        "--model_name_or_path", model, "--dataset_name_or_path", _documents(tmp_path / "docs.jsonl"),
        "--num_proxy_samples", "4", "--context_tokens", "640", "--key_length", "4", "--max_length", "64",
        "--fraction", "0.25", "--thresholds", "5", "8", "--local_dir", str(tmp_path / f"hub-{uuid.uuid4().hex}"),
    ]  # fmt: skip
    (args,) = HfArgumentParser(example.ScriptArguments).parse_args_into_dataclasses(argv)
    folder = example.main(args)
    everything = load_dataset(folder, split="train")
    assert len(everything) == 24 and {"score", "int_score", "ai_selected"} <= set(everything.column_names)
    for domain in ("prose", "code"):  # top 25% of each domain's 12 documents, by score
        rows = everything.filter(lambda d, n=domain: d == n, input_columns="domain")
        chosen = [s for s, f in zip(rows["score"], rows["ai_selected"]) if f]
        assert len(chosen) == 3 and min(chosen) >= max(
            s for s, f in zip(rows["score"], rows["ai_selected"]) if not f
        )
    top = load_dataset(folder, "int_score_ge_8", split="train")
    assert len(top) == sum(i >= 8 for i in everything["int_score"]) > 0
    card = (Path(folder) / "README.md").read_text()
    assert "attention_influence" in card and "int_score_ge_5" in card


@pytest.mark.slow
def test_slm_with_reference_losses(tmp_path):
    example = _load("slm_with_reference_losses")
    student, reference = _save_tiny(tmp_path / "student", seed=0), _save_tiny(tmp_path / "reference", seed=1)
    data = tmp_path / "docs.jsonl"
    sentences = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()]
    data.write_text("".join(json.dumps({"text": s}) + "\n" for s in sentences * 4))
    argv = [
        "--model_name_or_path", student, "--ref_model_name_or_path", reference, "--dataset_name_or_path",
        str(data), "--seq_length", "32", "--token_select_ratio", "0.5", "--max_steps", "2",
        "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--use_cpu", "--report_to", "none",
        "--save_strategy", "no", "--logging_steps", "1", "--disable_tqdm", "true",
        "--output_dir", str(tmp_path / "out"),
    ]  # fmt: skip
    script_args, training_args = HfArgumentParser(
        (example.ScriptArguments, example.SLMConfig)
    ).parse_args_into_dataclasses(argv)
    trainer = example.main(script_args, training_args)
    logs = [h for h in trainer.state.log_history if "slm_selected_share" in h]
    assert len(logs) == 2
    for entry in logs:  # ceil(0.5 * n) of n trainable tokens per global batch: a share just above 0.5
        assert 0.5 <= entry["slm_selected_share"] < 0.6
        assert entry["slm_loss_selected"] > entry["slm_loss_unselected"]
    trained = trainer.model.state_dict()
    initial = tiny_model("llama", seed=0).state_dict()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)
    assert (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.slow
def test_accelerate_eval_matches_one_process(tmp_path):
    model = _save_tiny(tmp_path / "model")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    items = [
        {"query": f"Question {i}?\nAnswer:", "choices": ["yes", "no", "maybe"], "gold": i % 3}
        for i in range(7)
    ]
    (tasks / "yn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    (tasks / "yn.yaml").write_text("name: yn\ntype: multiple_choice\ndata_files:\n  test: yn.jsonl\n")
    script = ROOT / "examples" / "accelerate_eval.py"
    common = ["--model_name_or_path", model, "--tasks", str(tasks), "--batch_size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
              "--main_process_port", str(free_port()), str(script)]  # fmt: skip
    two = subprocess.run(
        [*launch, *common, "--output_dir", str(tmp_path / "two")], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, str(script), *common, "--output_dir", str(tmp_path / "one")], env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    results = {
        n: json.loads((tmp_path / n / "results.json").read_text())["results"]["yn"] for n in ("one", "two")
    }
    assert results["two"]["num_items"] == results["one"]["num_items"] == 7
    for metric in ("acc", "acc_norm"):
        assert results["two"][metric] == pytest.approx(results["one"][metric], abs=1e-12)
    assert "acc_norm" in (tmp_path / "two" / "results.md").read_text()
