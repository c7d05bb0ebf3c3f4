"""The value rules (hf_select.validation): every numeric option of every command has one, and config-file
values are converted to, or refused by, their field types."""

import dataclasses
import importlib
import math
import typing

import pytest

from hf_select.cli import COMMANDS
from hf_select.errors import InputError
from hf_select.validation import RULES, _strip_optional, check_config_file_values, check_value

# numeric options checked by their own config's __post_init__ (method-specific bounds), or free
OWN_CHECKS = {
    "seed", "data_seed",  # any integer
    "buffer_factor", "select_ratio", "temperature", "score_window", "sketch_dim", "proxy_batch_size",
    "exact_inner_product_elements",  # OPUSConfig
    "token_select_ratio",  # SLMConfig
    "cooldown_fraction", "cooldown_pool_fraction",  # MeCoConfig
    "tasks",  # datatrove tasks: checked with the executor
}  # fmt: skip


def _numeric_fields():
    from transformers import TrainingArguments

    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    for words, (module, _) in COMMANDS.items():
        for cls in importlib.import_module(module).CONFIG_CLASSES:
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                inner, _ = _strip_optional(hints[f.name])
                if inner in (int, float) and f.name not in inherited:
                    yield " ".join(words), cls.__name__, f.name


def test_every_numeric_option_of_every_command_has_a_rule():
    missing = [field for field in _numeric_fields() if field[2] not in RULES and field[2] not in OWN_CHECKS]
    assert not missing, f"numeric options without a value rule in hf_select.validation.RULES: {missing}"


@pytest.mark.parametrize(
    "name, good, bad, message",
    [
        ("fraction", [1, 0.2, 1e-9], [0, -0.1, 1.5, math.nan], r"in \(0, 1\]"),
        ("combine_weight", [0, 0.5, 1], [-0.1, 2], r"in \[0, 1\]"),
        ("batch_size", [1, 64], [0, -3], ">= 1"),
        ("workers", [-1, 1, 8], [0, -2], ">= 1 or -1"),
        ("learning_rate", [1e-4, 3], [0, -1, math.nan, math.inf], "a finite number > 0"),
        ("limit", [None, 1, 50], [0], "leave it unset for all"),
    ],
)
def test_rules(name, good, bad, message):
    for value in good:
        check_value(name, value)
    for value in bad:
        with pytest.raises(InputError, match=message):
            check_value(name, value)


def test_config_file_values_are_converted_like_the_command_line_or_refused():
    from hf_select.commands.score_attention_influence import CONFIG_CLASSES

    data = {"max_length": "512", "min_tokens": 4.0, "executor": "local", "dataset_config": 2020}
    out = check_config_file_values(data, CONFIG_CLASSES, "c.yaml", {})
    assert out == {"max_length": 512, "min_tokens": 4, "executor": "local", "dataset_config": "2020"}
    for bad, message in [
        ({"max_length": 2.5}, "expected a whole number"),
        ({"executor": "spark"}, "expected one of local, slurm, ray"),
        ({"trust_remote_code": "yes"}, "expected true or false"),
        ({"text_column": ["a"]}, "expected text"),
        ({"batch_size": None}, "batch_size is null"),
        ({"batch_size": 0}, "--batch_size must be >= 1"),
    ]:
        with pytest.raises(InputError, match=message):
            check_config_file_values(bad, CONFIG_CLASSES, "c.yaml", {next(iter(bad)): 7})
