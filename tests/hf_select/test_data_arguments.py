"""One data-arguments dataclass: every dataset-reading command takes --dataset_name_or_path / --dataset_config /
--split / --text_column, and the older spellings still work (command line and config files)."""

import importlib

import pytest

from hf_select.cli import parse_configs
from hf_select.loading import DatasetSourceArguments

# module -> the old spellings it accepted before the shared dataclass
COMMANDS = {
    "hf_select.commands.score_attention_influence": {"--dataset_name": "dataset_name_or_path"},
    "hf_select.commands.reference_losses": {"--dataset_split": "split"},
    "hf_select.commands.train_slm": {"--dataset_split": "split"},
    "hf_select.commands.token_dynamics": {"--dataset_split": "split"},
    "hf_select.commands.train_meco": {"--dataset_split": "split"},
    "hf_select.commands.train_opus": {"--dataset": "dataset_name_or_path"},
    "hf_select.commands.select": {"--scored_dataset": "dataset_name_or_path"},
}
REQUIRED = ["--output_dir", "/tmp/x"]


def _data_args(module, argv):
    mod = importlib.import_module(module)
    configs = parse_configs(mod.CONFIG_CLASSES, argv, "t")
    (data,) = [c for c in configs if isinstance(c, DatasetSourceArguments)]
    # MeCo keeps text_column in MeCoConfig (its trainer reads it); every other command in DataArguments
    data.text_column = next(c.text_column for c in configs if hasattr(c, "text_column"))
    return data


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_takes_the_same_dataset_options(module):
    argv = ["--dataset_name_or_path", "d", "--dataset_config", "c", "--split", "s", "--text_column", "t"]
    data = _data_args(module, [*argv, *REQUIRED])
    assert (data.dataset_name_or_path, data.dataset_config, data.split, data.text_column) == (
        "d",
        "c",
        "s",
        "t",
    )


@pytest.mark.parametrize("module, old", [(m, o) for m, olds in COMMANDS.items() for o in olds.items()])
def test_old_spellings_are_aliases_on_the_command_line_and_in_config_files(module, old, tmp_path):
    flag, name = old
    assert getattr(_data_args(module, [flag, "v", *REQUIRED]), name) == "v"
    config = tmp_path / "config.yaml"
    config.write_text(f"{flag.lstrip('-')}: v\noutput_dir: /tmp/x\n")
    assert getattr(_data_args(module, [str(config)]), name) == "v"


def test_an_option_given_under_two_spellings_in_a_config_file_is_an_error(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("scored_dataset: a\ndataset_name_or_path: b\n")
    with pytest.raises(ValueError, match="same option"):
        _data_args("hf_select.commands.select", [str(config)])
