"""Bad inputs of the second sweep (the inputs a new user types that once ended in a traceback, a hang, a
misleading message or silence): each gets exit code 2 and one line naming the problem. Commands run
in-process through ``hf_select.cli.main`` on tiny models; a case that fails at parsing never loads a model.

Each row: id, argv (``{name}`` placeholders are paths of the ``world`` fixture), and a fragment the one-line
message on stderr must contain. The output-folder cases (a file, read-only, shared, equal to the input) live
with the output-folder tests.
"""

import json
import shutil

import pytest
import torch
from cli_checks import run_cli
from datasets import Dataset

from hf_select.cli import main
from hf_select.testing import TINY_CORPUS, tiny_model, tiny_tokenizer

SENTENCES = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    paths = {"root": str(root), "out": str(root / "out")}

    def save(name, dataset):
        dataset.save_to_disk(str(root / name))
        paths[name] = str(root / name)

    def write(name, text):
        (root / name).write_text(text)
        paths[name.replace(".", "_")] = str(root / name)

    model = root / "model"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    paths["model"] = str(model)
    # a model whose vocabulary (200) is smaller than its tokenizer's (300)
    small = root / "small_vocab_model"
    tiny_model("llama", vocab_size=200).save_pretrained(small)
    tiny_tokenizer().save_pretrained(small)
    paths["small_vocab_model"] = str(small)
    # a copy cut short, as by an interrupted download
    truncated = root / "truncated_model"
    shutil.copytree(model, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    paths["truncated_model"] = str(truncated)
    # pickle weights only
    pickled = root / "bin_model"
    shutil.copytree(model, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(tiny_model("llama").state_dict(), pickled / "pytorch_model.bin")
    paths["bin_model"] = str(pickled)

    n = len(SENTENCES)
    save("docs", Dataset.from_dict({"text": SENTENCES, "domain": ["a", "b"] * (n // 2)}))
    save("scored", Dataset.from_dict({"text": SENTENCES, "ai_score": [float(i) for i in range(n)],
                                      "quality": [float(-i) for i in range(n)]}))  # fmt: skip
    save("int_text", Dataset.from_dict({"text": list(range(n))}))
    save("list_text", Dataset.from_dict({"text": [[s] for s in SENTENCES]}))
    save("none_text", Dataset.from_dict({"text": [*SENTENCES[:2], None, *SENTENCES[3:]]}))
    save("qa", Dataset.from_dict({"question": [f"What is {i} + 1?" for i in range(8)],
                                  "answer": [str(i + 1) for i in range(8)]}))  # fmt: skip
    save("int_qa", Dataset.from_dict({"question": list(range(8)), "answer": list(range(8))}))
    save("proxy_other_columns", Dataset.from_dict({"question": ["q"], "response": ["r"]}))
    write("empty.jsonl", "")
    for name, (layer, head) in {"far_head": (0, 9), "far_layer": (5, 0), "negative_head": (1, -1)}.items():
        heads = {"scores": torch.rand(2, 4).tolist(), "selected": [[layer, head]]}
        write(f"{name}.json", json.dumps(heads))

    write("fraction_text.yaml", "scored_dataset: {scored}\nby: ''\nfraction: abc\n".format(**paths))
    write("fraction_null.json", json.dumps({"scored_dataset": paths["scored"], "fraction": None}))
    write("mix_string.yaml", "scored_dataset: {scored}\nby: ''\nmix: 'no'\noutput_dir: {out}/sel\n".format(**paths))
    write("duplicate.yaml", "scored_dataset: {scored}\nfraction: 0.2\nby: ''\nfraction: 0.5\n".format(**paths))
    scored = json.dumps(paths["scored"])
    write("duplicate.json", '{"scored_dataset": ' + scored + ', "fraction": 0.2, "fraction": 0.5}')
    tasks = root / "tasks"
    tasks.mkdir()
    records = [{"query": f"Question: {i}?\nAnswer:", "choices": ["yes", "no"], "gold": i % 2} for i in range(3)]
    (tasks / "t.test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tasks / "plain.yaml").write_text("name: plain\ntype: multiple_choice\ndata_files: t.test.jsonl\n")
    paths["task"] = str(tasks / "plain.yaml")
    return paths


AI = ["score", "attention-influence", "--model_name_or_path", "{model}", "--heads_file", "{far_head_json}",
      "--dataset_name", "{docs}", "--output_dir", "{out}/ai"]  # fmt: skip
REF = ["reference-losses", "--model_name_or_path", "{model}", "--dataset_name_or_path", "{docs}",
       "--seq_length", "16", "--output_dir", "{out}/ref"]  # fmt: skip
DW = ["score", "data-whisperer", "--model_name_or_path", "{model}", "--dataset_name_or_path", "{qa}",
      "--n_demos", "2", "--n_queries", "1", "--output_dir", "{out}/dw"]  # fmt: skip
HEADS = ["detect-heads", "--model_name_or_path", "{model}", "--values_dataset", "{docs}", "--num_samples", "2",
         "--context_tokens", "120", "--key_length", "4", "--output_file", "{out}/heads.json"]  # fmt: skip
TRAIN = ["--output_dir", "{out}/train", "--max_steps", "1", "--use_cpu", "--report_to", "none"]
FINETUNE = ["finetune", "--model_name_or_path", "{model}", "--dataset_name_or_path", "{qa}", "--score_column",
            "", "--no_compare", *TRAIN]  # fmt: skip
DYNAMICS = ["token-dynamics", "--checkpoints", "{model}", "--dataset_name_or_path", "{docs}", "--seq_length",
            "16", "--output_dir", "{out}/dyn"]  # fmt: skip
SELECT = ["select", "--scored_dataset", "{scored}", "--by", "", "--output_dir", "{out}/sel"]


def _with(argv, flag, value):
    """``argv`` with ``flag`` set to ``value`` (replaced when present)."""
    if flag in argv:
        i = argv.index(flag)
        return [*argv[:i], flag, value, *argv[i + 2 :]]
    return [*argv, flag, value]


CASES = [
    # tracebacks for plain user errors
    ("select: missing group column", _with(SELECT, "--by", "nosuch"), "group column 'nosuch' not in the dataset"),
    ("select: empty .jsonl", _with(SELECT, "--scored_dataset", "{empty_jsonl}"), "empty.jsonl is empty"),
    ("YAML: a word for a number", ["select", "{fraction_text_yaml}"], "line 3: fraction: expected a number, got 'abc'"),
    ("JSON: null for a number", ["select", "{fraction_null_json}"], "fraction is null"),
    ("truncated model.safetensors", _with(REF, "--model_name_or_path", "{truncated_model}"), "model.safetensors is truncated"),
    ("only pytorch_model.bin", _with(REF, "--model_name_or_path", "{bin_model}"), "holds only PyTorch pickle weights (pytorch_model.bin)"),
    ("vocab < tokenizer: attention-influence", _with(AI, "--model_name_or_path", "{small_vocab_model}"), "the model's embedding has only 200 rows"),
    ("vocab < tokenizer: reference-losses", _with(REF, "--model_name_or_path", "{small_vocab_model}"), "the model's embedding has only 200 rows"),
    ("vocab < tokenizer: token-dynamics", _with(_with(DYNAMICS, "--checkpoints", "{small_vocab_model}"), "--tokenizer_name_or_path", "{model}"), "past the embedding of checkpoint"),
    ("heads file: head out of range", AI, "head 9 out of range: LlamaForCausalLM has 4 query heads (a head of --heads_file {far_head_json})"),
    ("heads file: layer out of range", _with(AI, "--heads_file", "{far_layer_json}"), "layer 5 out of range"),
    ("heads file: negative head", _with(AI, "--heads_file", "{negative_head_json}"), "head -1 out of range"),
    ("data-whisperer --attn_layer 99", [*DW, "--attn_layer", "99"], "attn_layer 99 out of range: the model has 2 layers"),
    ("data-whisperer --attn_layer -1", [*DW, "--attn_layer", "-1"], "--attn_layer must be >= 0, got -1"),
    ("text column of ints: attention-influence", _with(AI, "--dataset_name", "{int_text}"), "column 'text' of {int_text} must hold text, but it holds int64"),
    ("text column of lists: attention-influence", _with(AI, "--dataset_name", "{list_text}"), "must hold text, but it holds list"),
    ("text column with None: attention-influence", _with(AI, "--dataset_name", "{none_text}"), "has no text in row 2"),
    ("text column of ints: reference-losses", _with(REF, "--dataset_name_or_path", "{int_text}"), "must hold text, but it holds int64"),
    ("text column with None: reference-losses", _with(REF, "--dataset_name_or_path", "{none_text}"), "has no text in row 2"),
    ("text column of ints: detect-heads", _with(HEADS, "--values_dataset", "{int_text}"), "column 'text' of --values_dataset must hold text"),
    ("text column with None: detect-heads", _with(HEADS, "--values_dataset", "{none_text}"), "has no text in row 2"),
    ("detect-heads --proxy_dataset with other columns", ["detect-heads", "--model_name_or_path", "{model}", "--proxy_dataset", "{proxy_other_columns}"], "proxy sample 0 lacks ['prompt', 'answer', 'value_span']"),
    ("finetune --max_length 0", [*FINETUNE, "--max_length", "0"], "--max_length must be >= 1, got 0"),
    # hangs
    ("detect-heads --key_length 0", _with(HEADS, "--key_length", "0"), "--key_length must be >= 1, got 0"),
    # wrong or misleading messages
    ("attention-influence --max_samples 0", [*AI, "--max_samples", "0"], "--max_samples must be >= 1, got 0; leave it unset for all"),
    ("attention-influence --max_samples -1", [*AI, "--max_samples", "-1"], "--max_samples must be >= 1, got -1"),
    ("data-whisperer --select_fraction 2", [*DW, "--select_fraction", "2"], "--select_fraction must be in (0, 1], got 2"),
    ("data-whisperer int question/answer columns", _with(DW, "--dataset_name_or_path", "{int_qa}"), "column 'question' of the dataset to score must hold text, but it holds int64"),
    ("data-whisperer --answer_budget_factor -1", [*DW, "--answer_budget_factor", "-1"], "--answer_budget_factor must be > 0, got -1"),
    ("data-whisperer --max_chars_per_field 0", [*DW, "--max_chars_per_field", "0"], "--max_chars_per_field must be >= 1, got 0"),
    # accepted silently
    ("finetune --learning_rate nan", [*FINETUNE, "--learning_rate", "nan"], "--learning_rate must be a finite number > 0, got nan"),
    ("select --combine_weight 2", [*SELECT, "--combine_with", "quality", "--combine_weight", "2"], "--combine_weight must be in [0, 1], got 2"),
    ("--split bogus on a dataset without splits", [*SELECT, "--split", "bogus"], "one dataset without splits, so it has no split 'bogus'"),
    ("attention-influence --min_tokens -1", [*AI, "--min_tokens", "-1"], "min_tokens must be >= 1, got -1"),
    ("attention-influence --map_batch_size 0", [*AI, "--map_batch_size", "0"], "--map_batch_size must be >= 1, got 0"),
    ("reference-losses --batch_size 0", [*REF, "--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    ("eval --num_fewshot -1", ["eval", "--model_name_or_path", "{model}", "--tasks", "{task}", "--num_fewshot", "-1", "--output_dir", "{out}/eval"], "--num_fewshot must be >= 0, got -1"),
    ("YAML: 'no' as text for a switch", ["select", "{mix_string_yaml}"], "line 3: mix: expected true or false (unquoted), got 'no'"),
    ("YAML: duplicate key", ["select", "{duplicate_yaml}"], "'fraction' is given twice (lines 2 and 4)"),
    ("JSON: duplicate key", ["select", "{duplicate_json}"], "'fraction' given twice"),
    ("detect-heads --min_accuracy 2", [*HEADS, "--min_accuracy", "2"], "--min_accuracy must be in [0, 1], got 2"),
    # "0 means all" (0 is an error: leave the option unset for all)
    ("data-whisperer --max_examples 0", [*DW, "--max_examples", "0"], "--max_examples must be >= 1, got 0; leave it unset for all"),
    ("train meco --max_documents 0", ["train", "meco", "--model_name_or_path", "{model}", "--dataset_name_or_path", "{docs}", "--max_documents", "0", *TRAIN], "--max_documents must be >= 1, got 0"),
    ("eval --limit 0", ["eval", "--model_name_or_path", "{model}", "--tasks", "{task}", "--limit", "0", "--output_dir", "{out}/eval"], "--limit must be >= 1, got 0"),
]  # fmt: skip

NEEDS_NO_GPU = [
    ("attention-influence --device cuda", [*AI, "--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
    ("data-whisperer --device cuda", [*DW, "--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
    ("detect-heads --device cuda", [*HEADS, "--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
    ("an unknown device", [*AI, "--device", "tpu9"], "'tpu9' is not a device torch knows"),
]  # fmt: skip


def _check(world, capsys, monkeypatch, argv, fragment):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    argv = [a.format(**world) for a in argv]
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    assert fragment.format(**world) in errors[0], err


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(world, capsys, monkeypatch, argv, fragment):
    _check(world, capsys, monkeypatch, argv, fragment)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the cases name a GPU this machine has")
@pytest.mark.parametrize("argv, fragment", [c[1:] for c in NEEDS_NO_GPU], ids=[c[0] for c in NEEDS_NO_GPU])
def test_missing_device(world, capsys, monkeypatch, argv, fragment):
    _check(world, capsys, monkeypatch, argv, fragment)


def test_config_file_values_take_the_field_types(world, tmp_path):
    """An unquoted YAML ``no`` is false (no mix is built); ``1e-1`` (a string to YAML 1.1) is a number."""
    config = tmp_path / "select.yaml"
    out = tmp_path / "sel"
    config.write_text(f"scored_dataset: {world['scored']}\nby: ''\nmix: no\nfraction: 5e-1\noutput_dir: {out}\n")
    assert main(["select", str(config)]) == 0
    assert (out / "selected").is_dir() and not (out / "mix").exists()
    from datasets import load_from_disk

    assert len(load_from_disk(str(out / "selected"))) == round(0.5 * len(SENTENCES))


def test_debug_keeps_the_traceback_of_a_validation_error(world):
    from hf_select.errors import InputError

    with pytest.raises(InputError, match="--combine_weight must be in"):
        main([a.format(**world) for a in [*SELECT, "--combine_weight", "2", "--debug"]])


def test_an_internal_error_keeps_its_traceback_and_says_it_is_a_bug(world, monkeypatch):
    import traceback

    import hf_select.commands.select as select_command

    def broken(args):
        raise RuntimeError("something internal went wrong")

    monkeypatch.setattr(select_command, "run", broken)
    with pytest.raises(RuntimeError, match="something internal went wrong") as raised:
        main([a.format(**world) for a in SELECT])  # uncaught, the interpreter prints it and exits with 1
    shown = "".join(traceback.format_exception(raised.value)).strip().splitlines()
    assert shown[0].startswith("Traceback") and "RuntimeError: something internal went wrong" in shown[-2]
    assert shown[-1].startswith("hf-select select: internal error: this is a bug in hf-select")


def test_the_python_api_gets_the_same_checks():
    from hf_select.attention_influence.proxy_task import build_proxy_samples
    from hf_select.commands.select import SelectArguments
    from hf_select.data_whisperer import DataWhispererConfig
    from hf_select.errors import InputError

    with pytest.raises(InputError, match=r"--fraction must be in \(0, 1\], got 2"):
        SelectArguments(dataset_name_or_path="x", fraction=2)
    with pytest.raises(InputError, match="--fraction must be a number"):
        SelectArguments(dataset_name_or_path="x", fraction="abc")
    with pytest.raises(InputError, match="--max_chars_per_field must be >= 1"):
        DataWhispererConfig(max_chars_per_field=0)
    with pytest.raises(ValueError, match="key_length must be >= 1"):  # at once, not an endless key search
        build_proxy_samples(SENTENCES, tiny_tokenizer(), num_samples=2, context_tokens=120, key_length=0)
