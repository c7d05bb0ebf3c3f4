"""One TrainingArguments base: no subclass ever stores a Hub token, and ``hf-select finetune --hub_token X``
leaves no trace of X in any file under its output folder (checkpoints, trainer state, logs, adapters)."""

from __future__ import annotations

import dataclasses
import os
import pickle

import pytest
from datasets import Dataset

from hf_select.data_whisperer.finetune import FinetuneArguments
from hf_select.trainer_ext.meco_config import MeCoConfig
from hf_select.trainer_ext.opus_config import OPUSConfig
from hf_select.trainer_ext.slm_config import SLMConfig
from hf_select.training_args import HfSelectTrainingArguments

SECRET = "hf_SECRETtoken0123456789"
EXTRA = {MeCoConfig: {"max_steps": 4}, OPUSConfig: {}, SLMConfig: {}, FinetuneArguments: {}}


def test_every_trainer_config_derives_from_the_one_base():
    from transformers import TrainingArguments

    import hf_select.data_whisperer.finetune as finetune
    import hf_select.trainer_ext.meco_config as meco
    import hf_select.trainer_ext.opus_config as opus
    import hf_select.trainer_ext.slm_config as slm

    subclasses = [
        value
        for module in (finetune, meco, opus, slm)
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, TrainingArguments) and value.__module__ == module.__name__
    ]
    assert set(subclasses) == set(EXTRA)
    assert all(issubclass(cls, HfSelectTrainingArguments) for cls in subclasses)


@pytest.mark.parametrize("cls", EXTRA, ids=lambda c: c.__name__)
def test_no_config_keeps_the_hub_token(cls, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    args = cls(output_dir=str(tmp_path), hub_token=SECRET, report_to="none", use_cpu=True, **EXTRA[cls])
    assert args.hub_token is None and os.environ["HF_TOKEN"] == SECRET
    assert SECRET.encode() not in pickle.dumps(args)
    assert SECRET not in args.to_json_string() and SECRET not in repr(args)
    assert SECRET not in str(dataclasses.asdict(args))


def test_finetune_command_leaves_no_trace_of_the_token(tmp_path, monkeypatch):
    from hf_select.cli import main
    from hf_select.testing import tiny_model, tiny_tokenizer

    monkeypatch.delenv("HF_TOKEN", raising=False)
    model = tmp_path / "model"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    rows = {"question": [f"What is {i} + {i}?" for i in range(8)], "answer": [str(2 * i) for i in range(8)]}
    rows["dw_score"] = [float(i) for i in range(8)]
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "ft"
    argv = ["finetune", "--model_name_or_path", str(model), "--dataset_name_or_path", str(tmp_path / "data")]
    argv += ["--fraction", "0.5", "--compare", "false", "--output_dir", str(out), "--max_steps", "2"]
    argv += ["--save_strategy", "steps", "--save_steps", "1", "--logging_steps", "1", "--use_cpu", "true"]
    argv += ["--lora_r", "2", "--report_to", "none", "--disable_tqdm", "true", "--hub_token", SECRET]
    assert main(argv) == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in files)  # a checkpoint was written
    assert [p for p in files if SECRET.encode() in p.read_bytes()] == []
    assert os.environ["HF_TOKEN"] == SECRET  # still usable by push_to_hub in this process
