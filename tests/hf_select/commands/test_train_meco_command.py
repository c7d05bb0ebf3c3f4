import pytest
from datasets import Dataset

from hf_select.cli import main, parse_configs
from hf_select.commands import train_meco
from hf_select.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.slow
def test_train_meco_command_end_to_end(tmp_path):
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    data = tmp_path / "docs"
    Dataset.from_dict(
        {
            "text": [f"The answer is {i}. def add(a, b): return a + b" for i in range(30)],
            "url": [f"https://s{i % 3}.org/{i}" for i in range(30)],
        }
    ).save_to_disk(str(data))
    out = tmp_path / "out"
    code = main(
        ["train", "meco", "--model_name_or_path", str(model_dir), "--from_scratch", "--dataset_name_or_path", str(data),
         "--output_dir", str(out), "--max_steps", "4", "--per_device_train_batch_size", "2", "--max_length", "48",
         "--use_cpu", "--report_to", "none", "--save_strategy", "no", "--cooldown_fraction", "0.25",
         "--metadata_mode", "domain", "--disable_tqdm", "true"]
    )  # fmt: skip
    assert code == 0
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()


def test_train_meco_command_rejects_bad_fraction(tmp_path):
    with pytest.raises(ValueError, match="cooldown_fraction"):
        main(["train", "meco", "--output_dir", str(tmp_path), "--cooldown_fraction", "1", "--debug"])


def test_train_meco_options_parse_from_yaml(tmp_path):
    path = tmp_path / "meco.yaml"
    path.write_text(
        "model_name_or_path: m\ndataset_name_or_path: d\noutput_dir: o\nmax_steps: 100\n"
        "cooldown_fraction: 0.2\nmetadata_column: topic\nmetadata_mode: raw\nmetadata_name: Topic\n"
    )
    model_args, data_args, config = parse_configs(train_meco.CONFIG_CLASSES, [str(path)], prog="t")
    assert (model_args.model_name_or_path, data_args.dataset_name_or_path) == ("m", "d")
    assert (config.cooldown_fraction, config.metadata_mode, config.metadata_name) == (0.2, "raw", "Topic")
    assert config.conditioned_steps() == 80
    assert (config.learning_rate, config.adam_beta2, config.weight_decay) == (3e-3, 0.95, 0.033)
    assert config.lr_scheduler_kwargs == {"min_lr_rate": 0.1}


def test_train_meco_help_renders(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "meco", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--cooldown_fraction" in out and "--metadata_mode" in out and "--dataset_name_or_path" in out
