"""``hf-select train slm|opus|meco``: ``--resume_from_checkpoint`` (a path, or True for the last checkpoint)
resumes to exactly the weights of an uninterrupted run, a SIGTERM stops at a step with a checkpoint (exit 143),
and a checkpoint that does not exist is an error. One mechanism for the three trainers
(hf_select.trainer_ext.resume)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import transformers
from safetensors.torch import load_file

from hf_select.cli import main
from hf_select.testing import TINY_CORPUS, tiny_model, tiny_tokenizer

SENTENCES = [s.strip() for s in TINY_CORPUS.split(".") if s.strip()]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    model = root / "model"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    with open(root / "corpus.jsonl", "w") as f:
        for i in range(48):
            text = " ".join(SENTENCES[(i + k) % len(SENTENCES)] for k in range(3))
            f.write(json.dumps({"text": text, "domain": "ab"[i % 2], "url": f"https://{'ab'[i % 2]}.org/{i}"}) + "\n")
    with open(root / "proxy.jsonl", "w") as f:
        for s in SENTENCES[:4]:
            f.write(json.dumps({"text": s}) + "\n")
    return root


COMMON = ["--use_cpu", "--report_to", "none", "--per_device_train_batch_size", "2", "--save_strategy", "steps",
          "--learning_rate", "1e-2", "--seed", "0", "--disable_tqdm", "true", "--logging_steps", "1"]  # fmt: skip


def _argv(kind, world, out, max_steps=4, save_steps=2, *extra):
    corpus = str(world / "corpus.jsonl")
    model = ["--model_name_or_path", str(world / "model")]
    steps = ["--max_steps", str(max_steps), "--save_steps", str(save_steps), "--output_dir", str(out)]
    if kind == "slm":
        argv = ["train", "slm", *model, "--dataset_name_or_path", corpus, "--seq_length", "32",
                "--ref_model_name_or_path", str(world / "model"), "--token_select_ratio", "0.6"]  # fmt: skip
    elif kind == "opus":
        argv = ["train", "opus", *model, "--dataset", corpus, "--proxy_dataset", str(world / "proxy.jsonl"),
                "--max_length", "32", "--score_window", "8", "--proxy_batch_size", "2",
                "--select_ratio", "0.5"]  # fmt: skip
    else:
        argv = ["train", "meco", *model, "--dataset_name_or_path", corpus, "--max_length", "32",
                "--cooldown_fraction", "0.5", "--metadata_column", "url"]  # fmt: skip
    return [*argv, *COMMON, *steps, *extra]


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key  # bit for bit


def _steps(monkeypatch, sigterm_at=None):
    """Count the optimizer steps this process runs (one micro-batch each here); with ``sigterm_at``, send
    this process a real SIGTERM during that step (1-based)."""
    original = transformers.Trainer.training_step
    calls = {"n": 0}

    def training_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", training_step)
    return calls


@pytest.mark.parametrize("kind", ["slm", "opus", "meco"])
def test_sigterm_then_resume_equals_the_uninterrupted_run(kind, world, tmp_path, monkeypatch, capsys):
    clean, run = tmp_path / "clean", tmp_path / "run"
    assert main(_argv(kind, world, clean, 4, 2)) == 0
    _steps(monkeypatch, sigterm_at=3)
    code = main(_argv(kind, world, run, 4, 2))
    err = capsys.readouterr().err
    assert code == 143, err
    assert "stopped by SIGTERM at step 3" in err and "--resume_from_checkpoint True" in err
    assert (run / "checkpoint-3" / "trainer_state.json").is_file()  # saved at the step the signal came in
    assert not (run / "model.safetensors").exists()  # the final model is not written by a stopped run
    steps = _steps(monkeypatch)
    assert main(_argv(kind, world, run, 4, 2, "--resume_from_checkpoint", "True")) == 0
    assert steps["n"] == 1  # only step 4 ran again
    _same_weights(clean, run)
    # a path works too: resume the clean run's checkpoint-2 into a third folder
    other = tmp_path / "from_path"
    steps = _steps(monkeypatch)
    assert main(_argv(kind, world, other, 4, 2, "--resume_from_checkpoint", str(clean / "checkpoint-2"))) == 0
    assert steps["n"] == 2
    _same_weights(clean, other)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("kind", ["slm", "opus"])
@pytest.mark.parametrize(
    "value, fragment",
    [
        ("{tmp}/no_such_checkpoint", "--resume_from_checkpoint {tmp}/no_such_checkpoint does not exist"),
        ("True", "no complete checkpoint-* folder in {tmp}/out"),
        ("{tmp}", "is not a Trainer checkpoint (no trainer_state.json)"),
    ],
    ids=["missing path", "True without checkpoints", "not a checkpoint"],
)
def test_a_checkpoint_that_does_not_exist_is_an_error(kind, value, fragment, world, tmp_path, capsys):
    value, fragment = value.format(tmp=tmp_path), fragment.format(tmp=tmp_path)
    code = main(_argv(kind, world, tmp_path / "out", 2, 1, "--resume_from_checkpoint", value))
    err = capsys.readouterr().err
    assert code == 2 and fragment in " ".join(err.split()) and "Traceback" not in err


def test_a_checkpoint_cut_short_is_skipped_by_resume_true(world, tmp_path, caplog):
    out = tmp_path / "out"
    assert main(_argv("slm", world, out, 4, 2)) == 0
    clean = _weights(out)
    (out / "model.safetensors").unlink()
    (out / "checkpoint-4" / "trainer_state.json").unlink()  # a kill during the save of checkpoint-4
    assert main(_argv("slm", world, out, 4, 2, "--resume_from_checkpoint", "True")) == 0
    assert "resuming from an earlier one" in caplog.text
    resumed = _weights(out)
    assert all(torch.equal(clean[k], resumed[k]) for k in clean)


@pytest.mark.slow
def test_an_external_sigterm_stops_training_in_a_subprocess(world, tmp_path):
    """A real ``kill -TERM`` from outside, then a resume: the weights of an uninterrupted run."""
    clean, run = tmp_path / "clean", tmp_path / "run"
    cli = [sys.executable, "-m", "hf_select.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = _argv("slm", world, clean, 40, 5)
    subprocess.run([*cli, *argv], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*cli, *_argv("slm", world, run, 40, 5)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run / "checkpoint-5" / "trainer_state.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err
    assert not list(run.rglob("*.tmp"))
    subprocess.run([*cli, *_argv("slm", world, run, 40, 5, "--resume_from_checkpoint", "True")], check=True,
                   env=env, capture_output=True)  # fmt: skip
    _same_weights(clean, run)
