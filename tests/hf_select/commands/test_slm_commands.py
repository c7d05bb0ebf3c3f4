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


def _allowed() -> dict:
    from hf_select.trainer_ext import slm_config

    return {
        "select_scope": slm_config.SELECT_SCOPES,
        "score": slm_config.SCORES,
        "negative_excess": slm_config.NEGATIVE_EXCESS_POLICIES,
        "self_reference_keep": slm_config.SELF_REFERENCE_KEEP,
        "overflow": ("split", "truncate"),
        "storage_dtype": ("float32", "float16"),
        "dtype": ("auto", "float32", "bfloat16"),
        "attn_implementation": ("eager", "sdpa"),
    }


ALLOWED = _allowed()


def _other_value(f):
    """A command-line value for field ``f`` that differs from its default, and the value it must parse to."""
    import dataclasses

    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    kind = str(f.type)
    choices = f.metadata.get("choices") or ALLOWED.get(f.name)
    if choices:
        value = next(c for c in choices if c != default)
        return [str(value)], value
    if "bool" in kind:
        return ([] if default else [""]), not default  # a bool flag given alone is True; --no_x turns it off
    if "float" in kind:
        return [repr(float(default or 0) + 0.25)], float(default or 0) + 0.25
    if "int" in kind:
        return [str(int(default or 0) + 3)], int(default or 0) + 3
    return ["given-" + f.name], "given-" + f.name


@pytest.mark.parametrize(
    "module",
    ["hf_select.commands.train_slm", "hf_select.commands.reference_losses", "hf_select.commands.token_dynamics"],
)
def test_every_option_given_on_the_command_line_reaches_its_config(module):
    """Each non-Trainer field, given a value other than its default, comes back parsed to that value (no field
    shadowed by another class's option, none dropped), and every field has a help line."""
    import dataclasses
    import importlib

    from transformers import TrainingArguments

    from hf_select.cli import parse_configs

    mod = importlib.import_module(module)
    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    argv, expected = ["--output_dir", "/tmp/x"], {}
    for cls in mod.CONFIG_CLASSES:
        for f in dataclasses.fields(cls):
            assert f.name in inherited or f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
            if f.name in inherited or f.name == "output_dir" or f.name in expected:
                continue
            values, value = _other_value(f)
            if "bool" in str(f.type) and not values and value is False:
                argv.append(f"--no_{f.name}")
            else:
                argv += [f"--{f.name}", *[v for v in values if v]]
            expected[f.name] = (cls, value)
    configs = parse_configs(mod.CONFIG_CLASSES, argv, "t")
    by_class = {type(c): c for c in configs}
    for name, (cls, value) in expected.items():
        got = getattr(by_class[cls], name)
        assert got == value or str(got) == str(value), f"--{name}: {got!r} != {value!r}"


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
