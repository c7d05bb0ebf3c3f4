"""Bad inputs, as a new user types them: each gets the expected exit code and a one-line message naming the
problem. Commands run in-process through ``hf_select.cli.main`` on tiny models.

Each row: id, argv (``{name}`` placeholders are paths of the ``world`` fixture), expected exit code, and a
fragment the message on stderr must contain. Exit code 2 with no traceback is the rule for user errors.
"""

import json
import math

import pytest
import torch
from cli_checks import run_cli
from datasets import Dataset

from hf_select.attention_influence.retrieval_heads import RetrievalHeads
from hf_select.cli import main
from hf_select.testing import TINY_CORPUS, tiny_model, tiny_tokenizer

SENTENCES = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    paths = {"root": str(root)}

    def save(name, dataset):
        dataset.save_to_disk(str(root / name))
        paths[name] = str(root / name)

    model = root / "model"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    paths["model"] = str(model)
    tiny_model("llama").save_pretrained(root / "model_without_tokenizer")
    paths["model_without_tokenizer"] = str(root / "model_without_tokenizer")
    other = root / "other_tokenizer_model"
    tiny_model("llama", seed=1).save_pretrained(other)
    tiny_tokenizer(vocab_size=280).save_pretrained(other)
    paths["other_tokenizer_model"] = str(other)

    save("docs", Dataset.from_dict({"text": SENTENCES, "domain": ["a", "b"] * (len(SENTENCES) // 2)}))
    save("empty_docs", Dataset.from_dict({"text": []}))
    save("blank_docs", Dataset.from_dict({"text": ["   ", "\n\n", " \t "]}))
    n = len(SENTENCES)
    save("scored", Dataset.from_dict({"text": SENTENCES, "ai_score": [float(i) for i in range(n)]}))
    save("nan_scored", Dataset.from_dict({"text": SENTENCES, "ai_score": [math.nan] * n}))
    short = [i % 3 == 0 for i in range(n)]
    scores = [math.nan if i % 4 == 1 else i / n for i in range(n)]
    save("short_scored", Dataset.from_dict({"text": SENTENCES, "ai_score": scores, "ai_too_short": short}))
    (root / "two").mkdir()
    save("two/selected", Dataset.from_dict({"text": ["a"]}))
    save("two/mix", Dataset.from_dict({"text": ["a", "b", "c"]}))

    rows = {"input_ids": [[1, 5, 6, 7, 8, 9]] * 6, "ref_loss": [[0.0, 1, 1, 1, 1, 1]] * 6}
    for name, change in {
        "ref_nan": lambda r: r.__setitem__(3, [0.0, 1, math.nan, 1, 1, 1]),
        "ref_inf": lambda r: r.__setitem__(4, [0.0, 1, 1, math.inf, 1, 1]),
        "ref_short": lambda r: r.__setitem__(5, [0.0, 1, 1]),
    }.items():
        losses = [list(x) for x in rows["ref_loss"]]
        change(losses)
        save(name, Dataset.from_dict({"input_ids": rows["input_ids"], "ref_loss": losses}))

    heads = RetrievalHeads.from_scores(torch.rand(2, 4), top_fraction=0.25)
    heads.save(root / "heads.json")
    paths["heads"] = str(root / "heads.json")

    tasks = root / "tasks"
    tasks.mkdir()
    records = [
        {"query": f"Question: {i}?\nAnswer:", "choices": ["yes", "no"], "gold": i % 2} for i in range(3)
    ]
    (tasks / "t.test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tasks / "plain.yaml").write_text("name: plain\ntype: multiple_choice\ndata_files: t.test.jsonl\n")
    (tasks / "broken.yaml").write_text("name: broken\ntype: [multiple_choice\ndata_files: t.test.jsonl\n")
    paths["plain_task"], paths["broken_task"] = str(tasks / "plain.yaml"), str(tasks / "broken.yaml")

    (root / "broken_config.yaml").write_text("scored_dataset: x\nfraction: [0.2\n")
    (root / "unknown_key.yaml").write_text("scored_dataset: x\nfractoin: 0.2\n")
    paths["broken_config"], paths["unknown_key"] = (
        str(root / "broken_config.yaml"),
        str(root / "unknown_key.yaml"),
    )
    paths["out"] = str(root / "out")
    return paths


TRAIN = ["--max_steps", "1", "--use_cpu", "--report_to", "none", "--save_strategy", "no"]
TRAIN += ["--per_device_train_batch_size", "2", "--output_dir", "{out}/slm"]
PUSH = ["push", "--source", "{short_scored}", "--score_column", "ai_score", "--local_dir", "{out}/pub"]

CASES = [
    # id, argv, exit code, message fragment
    ("unknown command", ["frobnicate"], 2, "unknown command 'frobnicate'"),
    ("command group alone", ["score"], 2, "choose one of"),
    ("unknown option", ["select", "--scored_dataset", "{scored}", "--fractoin", "0.2"], 2, "not used by the HfArgumentParser: ['--fractoin'"),
    ("required option missing", ["select"], 2, "--scored_dataset (or --dataset_name_or_path) is required"),
    ("missing local folder", ["select", "--scored_dataset", "./no_such_dir"], 2, "no such folder or file"),
    ("missing local file", ["select", "--scored_dataset", "nothere/scores.jsonl"], 2, "no such folder or file"),
    ("folder of several datasets", ["select", "--scored_dataset", "{root}/two"], 2, "several saved datasets"),
    ("missing score column", ["select", "--scored_dataset", "{docs}"], 2, "missing column(s) ['ai_score']"),
    ("missing split", ["reference-losses", "--model_name_or_path", "{model}", "--dataset_name_or_path",
                       "{root}/nothere.jsonl", "--output_dir", "{out}/r"], 2, "no such folder or file"),
    ("all-NaN scores select nothing", ["select", "--scored_dataset", "{nan_scored}", "--by", "",
                                       "--output_dir", "{out}/sel"], 2, "the selection is empty"),
    ("empty scored dataset", ["select", "--scored_dataset", "{empty_docs}", "--column", "text"], 2,
     "holds no rows"),
    ("YAML config error names the file", ["select", "{broken_config}"], 2, "broken_config.yaml is not valid YAML"),
    ("missing config file", ["select", "{root}/nothere.yaml"], 2, "nothere.yaml does not exist"),
    ("unknown config key", ["select", "{unknown_key}"], 2, "fractoin"),
    ("missing model folder", ["train", "slm", "--model_name_or_path", "./no_model", "--dataset_name_or_path",
                              "{docs}", *TRAIN], 2, "no such model folder: ./no_model"),
    ("model folder without tokenizer", ["train", "slm", "--model_name_or_path", "{model_without_tokenizer}",
                                        "--dataset_name_or_path", "{docs}", *TRAIN], 2, "holds no tokenizer"),
    ("missing tokenizer folder", ["train", "slm", "--model_name_or_path", "{model}", "--tokenizer_name_or_path",
                                  "./no_tok/", "--dataset_name_or_path", "{docs}", *TRAIN], 2,
     "no such tokenizer folder"),
    ("ref_loss with inf", ["train", "slm", "--model_name_or_path", "{model}", "--dataset_name_or_path",
                           "{ref_inf}", *TRAIN], 2, "ref_loss of dataset row 4 holds an infinite or null value (inf)"),
    ("ref_loss length mismatch", ["train", "slm", "--model_name_or_path", "{model}", "--dataset_name_or_path",
                                  "{ref_short}", *TRAIN], 2, "ref_loss of dataset row 5 has 3 values for 6"),
    ("online reference with another tokenizer", ["train", "slm", "--model_name_or_path", "{model}",
                                                 "--ref_model_name_or_path", "{other_tokenizer_model}",
                                                 "--dataset_name_or_path", "{docs}", "--seq_length", "16", *TRAIN],
     2, "differs from the student's"),
    ("empty training set", ["train", "slm", "--model_name_or_path", "{model}", "--dataset_name_or_path",
                            "{empty_docs}", *TRAIN], 2, "holds no rows"),
    ("bad overflow policy", ["reference-losses", "--model_name_or_path", "{model}", "--dataset_name_or_path",
                             "{docs}", "--overflow", "wrap", "--output_dir", "{out}/r"], 2, "--overflow must be"),
    ("missing text column", ["reference-losses", "--model_name_or_path", "{model}", "--dataset_name_or_path",
                             "{docs}", "--text_column", "body", "--output_dir", "{out}/r"], 2,
     "neither input_ids nor a 'body' column"),
    ("whitespace-only documents", ["score", "attention-influence", "--model_name_or_path", "{model}",
                                   "--heads_file", "{heads}", "--dataset_name", "{blank_docs}",
                                   "--output_dir", "{out}/ai"], 2, "no document of"),
    ("missing heads file", ["score", "attention-influence", "--model_name_or_path", "{model}", "--heads_file",
                            "{root}/no_heads.json", "--dataset_name", "{docs}", "--output_dir", "{out}/ai2"], 2,
     "no_heads.json"),
    ("task data_files as a plain string", ["eval", "--model_name_or_path", "{model}", "--tasks", "{plain_task}",
                                           "--output_dir", "{out}/eval", "--batch_size", "2"], 0, ""),
    ("task YAML error names the file", ["eval", "--model_name_or_path", "{model}", "--tasks", "{broken_task}",
                                        "--output_dir", "{out}/eval2"], 2, "broken.yaml is not valid YAML"),
    ("push NaN scores without --drop_nan", PUSH, 2, "NaN or infinite"),
    ("push --drop_nan drops NaN and ai_too_short rows", [*PUSH, "--drop_nan"], 0, ""),
    ("push --params not JSON", [*PUSH, "--drop_nan", "--params", "{{k: 1"], 2, "--params must be JSON"),
    ("push needs a destination", ["push", "--source", "{scored}", "--score_column", "ai_score"], 2,
     "exactly one of repo_id"),
]  # fmt: skip


@pytest.mark.parametrize("argv, code, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(world, capsys, monkeypatch, argv, code, fragment):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    argv = [a.format(**world) for a in argv]
    got, err = run_cli(argv, capsys)
    assert got == code, err
    assert fragment in " ".join(err.split())
    if code == 2:
        assert "Traceback" not in err and len([line for line in err.splitlines() if "error" in line]) == 1


def test_push_drop_nan_publishes_exactly_the_scored_rows(world, capsys):
    from datasets import load_dataset, load_from_disk

    out = f"{world['out']}/pub_exact"
    assert main(["push", "--source", world["short_scored"], "--score_column", "ai_score", "--drop_nan",
                 "--local_dir", out]) == 0  # fmt: skip
    source = load_from_disk(world["short_scored"])
    kept = [t for t, s, short in zip(source["text"], source["ai_score"], source["ai_too_short"])
            if not math.isnan(s) and not short]  # fmt: skip
    assert load_dataset(out, "default", split="train")["text"] == kept


def test_debug_shows_the_traceback(world):
    with pytest.raises(ValueError, match=r"--scored_dataset \(or --dataset_name_or_path\) is required"):
        main(["select", "--debug"])


def test_a_hub_token_on_the_command_line_never_reaches_training_args_bin(world, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "unused")
    secret = "hf_SECRETcommandline123"
    out = tmp_path / "slm"
    argv = [
        "train",
        "slm",
        "--model_name_or_path",
        world["model"],
        "--dataset_name_or_path",
        world["ref_nan"],
    ]
    argv = [a if a != world["ref_nan"] else world["docs"] for a in argv]
    argv += [
        "--ref_model_name_or_path",
        world["model"],
        "--seq_length",
        "16",
        "--max_steps",
        "1",
        "--use_cpu",
    ]
    argv += ["--report_to", "none", "--save_strategy", "steps", "--save_steps", "1", "--output_dir", str(out)]
    argv += ["--per_device_train_batch_size", "2", "--hub_token", secret]
    assert main(argv) == 0
    saved = list(out.rglob("training_args.bin"))
    assert saved  # a checkpoint was written
    for path in saved:
        assert secret.encode() not in path.read_bytes()
        assert torch.load(path, weights_only=False).hub_token is None
    import os

    assert os.environ["HF_TOKEN"] == secret  # still usable by push_to_hub in this process
