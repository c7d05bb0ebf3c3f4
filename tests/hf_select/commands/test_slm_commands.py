import json

import pytest
from datasets import load_from_disk

from hf_select.cli import main
from hf_select.testing import TINY_CORPUS, tiny_model, tiny_tokenizer


@pytest.fixture
def tiny_world(tmp_path):
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    data = tmp_path / "docs.jsonl"
    sentences = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()]
    data.write_text("".join(json.dumps({"text": s}) + "\n" for s in sentences * 2))
    return tmp_path, model_dir, data


@pytest.mark.parametrize(
    "module",
    [
        "hf_select.commands.train_slm",
        "hf_select.commands.reference_losses",
        "hf_select.commands.token_dynamics",
    ],
)
def test_commands_parse_and_document_every_field(module):
    import dataclasses
    import importlib

    from transformers import TrainingArguments

    from hf_select.cli import parse_configs

    mod = importlib.import_module(module)
    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    for cls in mod.CONFIG_CLASSES:
        for f in dataclasses.fields(cls):
            assert f.name in inherited or f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
    configs = parse_configs(
        mod.CONFIG_CLASSES, ["--output_dir", "/tmp/x", "--dataset_name_or_path", "d"], "t"
    )
    assert len(configs) == len(mod.CONFIG_CLASSES)


@pytest.mark.slow  # ~15-30 s end to end; the quick variant above checks parsing
def test_reference_losses_then_train_slm_then_token_dynamics(tiny_world):
    tmp, model_dir, data = tiny_world
    rows_dir, out_dir, dyn_dir = tmp / "rows", tmp / "slm", tmp / "dyn"
    common = ["--dataset_name_or_path", str(data), "--seq_length", "32"]
    assert (
        main(
            [
                "reference-losses",
                "--model_name_or_path",
                str(model_dir),
                *common,
                "--output_dir",
                str(rows_dir),
            ]
        )
        == 0
    )
    rows = load_from_disk(str(rows_dir))
    assert all(len(a) == len(b) for a, b in zip(rows["ref_loss"], rows["input_ids"]))
    train = ["train", "slm", "--model_name_or_path", str(model_dir), "--dataset_name_or_path", str(rows_dir)]
    train += ["--output_dir", str(out_dir), "--max_steps", "2", "--per_device_train_batch_size", "2"]
    train += ["--use_cpu", "--report_to", "none", "--save_strategy", "no", "--select_scope", "sequence"]
    assert main(train) == 0
    assert (out_dir / "model.safetensors").exists()
    dyn = ["token-dynamics", "--checkpoints", f"{model_dir},{out_dir}", *common, "--output_dir", str(dyn_dir)]
    assert main([*dyn, "--max_rows", "4", "--tokenizer_name_or_path", str(model_dir)]) == 0
    shares = json.loads((dyn_dir / "shares.json").read_text())["shares"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert (dyn_dir / "token_dynamics.png").exists()
