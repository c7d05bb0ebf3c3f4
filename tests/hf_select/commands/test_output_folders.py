"""Output folders (hf_select.output_dir): never an input, never a file or read-only, never shared by two runs.

Table rows as in test_bad_inputs.py: id, argv (``{name}``: paths of the ``world`` fixture), exit code, and a
fragment of the one-line message. Every refused case also checks that the input is untouched.
"""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from cli_checks import run_cli
from datasets import Dataset

from hf_select.attention_influence.retrieval_heads import RetrievalHeads
from hf_select.output_dir import LOCK_NAME, OutputDirError, OutputLock
from hf_select.testing import TINY_CORPUS, tiny_model, tiny_tokenizer

SENTENCES = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    model = root / "model"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    Dataset.from_dict({"text": SENTENCES}).save_to_disk(str(root / "docs"))
    scored = Dataset.from_dict({"text": SENTENCES, "ai_score": [float(i) for i in range(len(SENTENCES))]})
    scored.save_to_disk(str(root / "scored"))
    (root / "jsonl").mkdir()
    (root / "jsonl" / "d.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES))
    (root / "a_file").write_text("not a folder")
    RetrievalHeads.from_scores(torch.rand(2, 4), 0.25).save(root / "h.json")
    return {
        "root": str(root), "model": str(model), "docs": str(root / "docs"), "scored": str(root / "scored"),
        "jsonl": str(root / "jsonl"), "file": str(root / "a_file"), "out": str(root / "out"),
    }  # fmt: skip


REF = ["reference-losses", "--model_name_or_path", "{model}", "--seq_length", "16"]
SELECT = ["select", "--by", "", "--fraction", "0.5"]
TRAIN = ["--max_steps", "1", "--use_cpu", "--report_to", "none", "--save_strategy", "no"]

CASES = [
    # id, argv, exit code, message fragment
    ("reference-losses into its input", [*REF, "--dataset_name_or_path", "{docs}", "--output_dir", "{docs}"], 2,
     "--output_dir {docs} is the input --dataset_name_or_path"),
    ("reference-losses inside its input", [*REF, "--dataset_name_or_path", "{jsonl}", "--output_dir",
                                           "{jsonl}/refs"], 2, "is inside the input --dataset_name_or_path"),
    ("select into its input", [*SELECT, "--scored_dataset", "{scored}", "--output_dir", "{scored}"], 2,
     "is the input --dataset_name_or_path"),
    ("select into its input, spelt otherwise", [*SELECT, "--scored_dataset", "{scored}", "--output_dir",
                                                "{root}/./scored/"], 2, "is the input"),
    ("score attention-influence into its input", ["score", "attention-influence", "--model_name_or_path",
                                                  "{model}", "--heads_file", "{root}/h.json",
                                                  "--dataset_name_or_path", "{docs}", "--output_dir", "{docs}"],
     2, "is the input --dataset_name_or_path"),
    ("score data-whisperer into its input", ["score", "data-whisperer", "--model_name_or_path", "{model}",
                                             "--dataset_name_or_path", "{docs}", "--output_dir", "{docs}"], 2,
     "is the input --dataset_name_or_path"),
    ("train slm into its dataset", ["train", "slm", "--model_name_or_path", "{model}", "--dataset_name_or_path",
                                    "{docs}", "--output_dir", "{docs}", *TRAIN], 2, "is the input"),
    ("train slm into its model", ["train", "slm", "--model_name_or_path", "{model}", "--dataset_name_or_path",
                                  "{docs}", "--output_dir", "{model}", *TRAIN], 2,
     "is the input --model_name_or_path"),
    ("finetune into its model", ["finetune", "--model_name_or_path", "{model}", "--dataset_name_or_path",
                                 "{docs}", "--output_dir", "{model}"], 2, "would replace the model"),
    ("push --local_dir into its source", ["push", "--source", "{scored}", "--score_column", "ai_score",
                                          "--local_dir", "{scored}"], 2, "--local_dir {scored} is the input --source"),
    ("output folder is a file", [*SELECT, "--scored_dataset", "{scored}", "--output_dir", "{file}"], 2,
     "--output_dir {file} is a file, not a folder"),
    ("output folder under a file", [*SELECT, "--scored_dataset", "{scored}", "--output_dir", "{file}/sel"], 2,
     "which is a file, not a folder"),
    ("push --local_dir is a file", ["push", "--source", "{scored}", "--score_column", "ai_score", "--local_dir",
                                    "{file}"], 2, "--local_dir {file} is a file"),
    ("eval --output_dir is a file", ["eval", "--model_name_or_path", "{model}", "--tasks", "x.yaml",
                                     "--output_dir", "{file}"], 2, "is a file, not a folder"),
    ("output folder cannot be created", [*SELECT, "--scored_dataset", "{scored}", "--output_dir",
                                         "/sys/hf_select_out"], 2, "cannot create --output_dir /sys/hf_select_out"),
    ("a model subfolder is allowed", [*SELECT, "--scored_dataset", "{scored}", "--output_dir", "{model}/sel"], 0,
     ""),
]  # fmt: skip


def _snapshot(world):
    return {
        str(p): p.stat().st_mtime_ns
        for key in ("docs", "scored", "jsonl", "model")
        for p in __import__("pathlib").Path(world[key]).rglob("*")
        if "sel" not in p.parts
    }


@pytest.mark.parametrize("argv, code, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_output_folder(world, capsys, argv, code, fragment):
    before = _snapshot(world)
    argv = [a.format(**world) for a in argv]
    got, err = run_cli(argv, capsys)
    assert got == code, err
    assert fragment.format(**world) in " ".join(err.split())
    if code == 2:
        assert "Traceback" not in err and len([line for line in err.splitlines() if "error" in line]) == 1
    assert _snapshot(world) == before  # no input was touched


def test_a_read_only_output_folder_is_one_line(world, capsys, tmp_path):
    if os.geteuid() == 0:
        target = "/sys"  # root writes anywhere but on a read-only file system
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
    code, err = run_cli([*SELECT, "--scored_dataset", world["scored"], "--output_dir", str(target)], capsys)
    assert code == 2 and "is not writable" in err and "Traceback" not in err


def test_a_failed_command_leaves_no_empty_output_folder(world, capsys, tmp_path):
    out = tmp_path / "never" / "written"
    code, _ = run_cli(["select", "--scored_dataset", world["docs"], "--output_dir", str(out)], capsys)
    assert code == 2 and not out.exists()


HOLD = """
import sys, time
from hf_select.output_dir import OutputLock
with OutputLock(sys.argv[1], "hf-select holder"):
    print("locked", flush=True)
    time.sleep(600)
"""


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_into_a_locked_folder_is_refused_at_once(world, capsys, tmp_path):
    out = tmp_path / "sel"
    out.mkdir()
    holder = _holder(out)
    try:
        start = time.monotonic()
        code, err = run_cli([*SELECT, "--scored_dataset", world["scored"], "--output_dir", str(out)], capsys)
        assert code == 2 and "is in use by another run" in err and f"pid {holder.pid}" in err
        assert "hf-select holder" in err and time.monotonic() - start < 60
        assert not (out / "state.json").exists()  # nothing was written
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's lock: its lock file is taken over
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid
    code, err = run_cli([*SELECT, "--scored_dataset", world["scored"], "--output_dir", str(out)], capsys)
    assert code == 0, err
    assert not (out / LOCK_NAME).exists()  # released at the end


def test_a_stale_lock_file_from_a_dead_pid_is_taken_over(world, tmp_path):
    out = tmp_path / "stale"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 999_999_999, "host": "gone"}))
    with OutputLock(out) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()


def test_ranks_of_one_job_share_the_lock_and_other_jobs_do_not(tmp_path, monkeypatch):
    out = tmp_path / "ranks"
    out.mkdir()
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "locked"
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", "29500")
        with OutputLock(out):  # rank 1 of the same job
            pass
        monkeypatch.setenv("MASTER_PORT", "29501")  # another job
        with pytest.raises(OutputDirError, match="in use by another run"):
            OutputLock(out).acquire()
    finally:
        proc.kill()
        proc.wait()
