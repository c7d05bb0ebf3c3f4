"""One data-arguments dataclass: every command that reads a dataset (any command of the CLI with a
``dataset_name_or_path`` option) takes it through :class:`DatasetSourceArguments`, so --dataset_name_or_path /
--dataset_config / --split mean the same everywhere, and the other spellings are aliases (command line and
config files)."""

import dataclasses
import importlib

import pytest

from hf_select.cli import COMMANDS as CLI_COMMANDS
from hf_select.cli import parse_configs
from hf_select.loading import DatasetSourceArguments


def _reads_a_dataset(module: str) -> bool:
    classes = importlib.import_module(module).CONFIG_CLASSES
    return any(f.name == "dataset_name_or_path" for cls in classes for f in dataclasses.fields(cls))


MODULES = sorted(module for module, _ in CLI_COMMANDS.values())
READERS = [m for m in MODULES if _reads_a_dataset(m)]
# the other spellings each dataset-reading command accepts
ALIASES = {
    "hf_select.commands.score_attention_influence": {"--dataset_name": "dataset_name_or_path"},
    "hf_select.commands.score_data_whisperer": {"--dataset_name": "dataset_name_or_path"},
    "hf_select.commands.finetune": {"--dataset_split": "split"},
    "hf_select.commands.reference_losses": {"--dataset_split": "split"},
    "hf_select.commands.train_slm": {"--dataset_split": "split"},
    "hf_select.commands.token_dynamics": {"--dataset_split": "split"},
    "hf_select.commands.train_meco": {"--dataset_split": "split"},
    "hf_select.commands.train_opus": {"--dataset": "dataset_name_or_path"},
    "hf_select.commands.select": {"--scored_dataset": "dataset_name_or_path"},
    "hf_select.commands.compare": {"--dataset_name": "dataset_name_or_path", "--dataset_split": "split"},
}
# options a command needs besides its dataset
REQUIRED = ["--output_dir", "/tmp/x"]
EXTRA = {"hf_select.commands.compare": ["--model_name_or_path", "m", "--builtin_pool", "stdlib"]}


def test_the_dataset_reading_commands_are_the_expected_ones():
    # derived from the CLI's command table: a new command that reads a dataset joins the tests below
    assert sorted(READERS) == sorted(ALIASES)
    assert "hf_select.commands.detect_heads" not in READERS


def _data_args(module, argv):
    mod = importlib.import_module(module)
    configs = parse_configs(mod.CONFIG_CLASSES, [*argv, *EXTRA.get(module, [])], "t")
    (data,) = [c for c in configs if isinstance(c, DatasetSourceArguments)]
    return data, configs


@pytest.mark.parametrize("module", READERS)
def test_every_command_takes_the_same_dataset_options(module):
    argv = ["--dataset_name_or_path", "d", "--dataset_config", "c", "--split", "s"]
    data, configs = _data_args(module, [*argv, *REQUIRED])
    assert (data.dataset_name_or_path, data.dataset_config, data.split) == ("d", "c", "s")
    columns = [c.text_column for c in configs if hasattr(c, "text_column")]
    if columns:  # the text column, where the command has one, is --text_column
        extra = ["--text_column", "t", *REQUIRED, *EXTRA.get(module, [])]
        configs = parse_configs(importlib.import_module(module).CONFIG_CLASSES, [*argv, *extra], "t")
        assert [c.text_column for c in configs if hasattr(c, "text_column")] == ["t"]


@pytest.mark.parametrize("module, old", [(m, o) for m, olds in ALIASES.items() for o in olds.items()])
def test_other_spellings_are_aliases_on_the_command_line_and_in_config_files(module, old, tmp_path):
    flag, name = old
    assert getattr(_data_args(module, [flag, "v", *REQUIRED])[0], name) == "v"
    config = tmp_path / "config.yaml"
    config.write_text(f"{flag.lstrip('-')}: v\noutput_dir: /tmp/x\n")
    assert getattr(_data_args(module, [str(config)])[0], name) == "v"


def test_dataset_config_reaches_the_loader(monkeypatch):
    from datasets import Dataset

    seen = []

    def load(*args):
        seen.append(args)
        return Dataset.from_dict({"text": ["a document"]})

    monkeypatch.setattr("hf_select.loading.load_any_dataset", load)
    for module in READERS:
        data, _ = _data_args(module, ["--dataset_name_or_path", "d", "--dataset_config", "c", "--split", "s", *REQUIRED])
        data.load_dataset()
    assert seen == [("d", "s", "c")] * len(READERS)


def test_an_option_given_under_two_spellings_in_a_config_file_is_an_error(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("scored_dataset: a\ndataset_name_or_path: b\n")
    with pytest.raises(ValueError, match="same option"):
        _data_args("hf_select.commands.select", [str(config)])
