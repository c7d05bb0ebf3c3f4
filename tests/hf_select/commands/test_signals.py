"""SIGTERM / SIGINT during the long scoring jobs (AttentionInfluence, reference losses, Data Whisperer) stop
cleanly: exit 143 / 130, one line, finished parts kept, no ``.tmp`` left; the re-run resumes to the clean
result. (Training: tests/hf_select/commands/test_train_resume.py.)

The quick tests send the real signal to this process from inside a scoring batch (the handler of
hf_select.interrupt runs as in production); the slow ones kill a ``hf-select`` subprocess from outside.
"""

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from datasets import Dataset, DatasetDict, load_from_disk

from hf_select.attention_influence.retrieval_heads import RetrievalHeads
from hf_select.cli import main
from hf_select.testing import TINY_CORPUS, tiny_model, tiny_tokenizer

SENTENCES = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    model = root / "model"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    Dataset.from_dict({"text": SENTENCES * 4}).save_to_disk(str(root / "docs"))
    RetrievalHeads.from_scores(torch.rand(2, 4, generator=torch.Generator().manual_seed(0)), 0.25).save(
        root / "heads.json"
    )
    rows = {"question": [f"What is {i} + {i}?" for i in range(16)], "answer": [str(2 * i) for i in range(16)]}
    DatasetDict({"train": Dataset.from_dict(rows)}).save_to_disk(str(root / "qa"))
    return root


def _ref(world, out):
    return ["reference-losses", "--model_name_or_path", str(world / "model"), "--dataset_name_or_path",
            str(world / "docs"), "--seq_length", "24", "--part_size", "3", "--batch_size", "1",
            "--output_dir", str(out)]  # fmt: skip


def _ai(world, out):
    return ["score", "attention-influence", "--model_name_or_path", str(world / "model"), "--heads_file",
            str(world / "heads.json"), "--dataset_name_or_path", str(world / "docs"), "--part_size", "4",
            "--map_batch_size", "2", "--min_tokens", "1", "--output_dir", str(out)]  # fmt: skip


def _dw(world, out):
    return ["score", "data-whisperer", "--model_name_or_path", str(world / "model"), "--dataset_name_or_path",
            str(world / "qa"), "--n_demos", "2", "--n_queries", "2", "--batch_prompts", "1",
            "--output_dir", str(out)]  # fmt: skip


def _dw_answer(ids):
    return " 0\nAnswer 2: 2"


# job -> (argv builder, (module, attribute) called once per batch, finished-part glob, result loader)
JOBS = {
    "reference-losses": (_ref, ("hf_select.slm.reference_losses", "reference_batch"), "parts/part-*.done",
                         lambda out: load_from_disk(str(out))),
    "attention-influence": (_ai, ("hf_select.attention_influence.scorer", "AttentionInfluence.__call__"),
                            "parts/part-*.done", lambda out: load_from_disk(str(out / "scored"))),
    "data-whisperer": (_dw, ("hf_select.data_whisperer.scorer", "DataWhisperer._generate_batch"),
                       "dw_state/*/groups.jsonl", lambda out: load_from_disk(str(out / "dataset"))),
}  # fmt: skip


def _patch_calls(monkeypatch, target, on_call):
    import importlib

    module_name, attribute = target
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    calls = {"n": 0}
    monkeypatch.setattr(owner, name, _Counted(getattr(owner, name), calls, on_call, isinstance(owner, type)))
    return calls


class _Counted:
    """Counts the calls of a function (or method, ``bound``) and runs ``on_call(n)`` before each."""

    def __init__(self, original, calls, on_call, bound):
        self.original, self.calls, self.on_call, self.bound = original, calls, on_call, bound

    def __call__(self, *args, **kwargs):
        self.calls["n"] += 1
        self.on_call(self.calls["n"])
        return self.original(*args, **kwargs)

    def __get__(self, obj, owner=None):  # as a method: bind like a function
        return self if obj is None or not self.bound else functools.partial(self.__call__, obj)

    def __reduce__(self):  # datasets hashes map functions: keep the test's closures out of it
        return (str, ("counted",))


def _finished(out, pattern):
    found = list(out.glob(pattern))
    if pattern.endswith(".jsonl"):
        return sum(len(p.read_text().splitlines()) for p in found)
    return len(found)


def _same(a, b):
    assert a.column_names == b.column_names and len(a) == len(b)
    for column in a.column_names:
        assert a[column] == b[column], column


@pytest.fixture
def dw_answers(request, monkeypatch):
    """Data Whisperer: a fixed answer, and no ``datasets`` cache hit, so that every run scores."""
    if request.getfixturevalue("job") != "data-whisperer":
        yield
        return
    import datasets

    from hf_select.data_whisperer.scorer import DataWhisperer

    monkeypatch.setattr(DataWhisperer, "generate_fn", staticmethod(_dw_answer))
    datasets.disable_caching()
    yield
    datasets.enable_caching()


@pytest.mark.parametrize(
    "sig, code",
    [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)],
    ids=["SIGTERM", "SIGINT"],
)
@pytest.mark.parametrize("job", sorted(JOBS))
def test_a_signal_stops_cleanly_and_the_rerun_resumes(job, sig, code, world, tmp_path, monkeypatch, capsys,
                                                      dw_answers):  # fmt: skip
    argv, target, pattern, load = JOBS[job]
    assert main(argv(world, tmp_path / "clean")) == 0
    clean = load(tmp_path / "clean")
    out = tmp_path / "run"

    def send(n):
        if n == 4:
            os.kill(os.getpid(), sig)

    _patch_calls(monkeypatch, target, send)
    got = main(argv(world, out))
    err = capsys.readouterr().err
    assert got == code, err
    assert f"interrupted by {signal.Signals(sig).name}" in err and "Traceback" not in err
    finished = _finished(out, pattern)
    assert finished >= 1  # finished parts are kept
    assert not list(tmp_path.rglob("*.tmp")) and not (out / ".hf_select.lock").exists()
    calls = _patch_calls(monkeypatch, target, lambda n: None)
    assert main(argv(world, out)) == 0
    _same(load(out), clean)
    resumed = calls["n"]
    clean_calls = _patch_calls(monkeypatch, target, lambda n: None)
    assert main(argv(world, tmp_path / "clean2")) == 0
    assert resumed < clean_calls["n"]  # the re-run did not redo the finished parts


def test_a_signal_during_a_part_write_leaves_no_tmp(world, tmp_path, monkeypatch, capsys):
    from datasets import Dataset as DS

    original = DS.to_parquet

    def to_parquet(self, path, *args, **kwargs):
        written = original(self, path, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # lands before the rename: the .tmp exists now
        return written

    monkeypatch.setattr(DS, "to_parquet", to_parquet)
    out = tmp_path / "run"
    assert main(_ref(world, out)) == 143
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(DS, "to_parquet", original)
    assert main(_ref(world, out)) == 0
    assert main(_ref(world, tmp_path / "clean")) == 0
    _same(load_from_disk(str(out)), load_from_disk(str(tmp_path / "clean")))
    capsys.readouterr()


DRIVER = textwrap.dedent(
    """
    import importlib, sys, time
    from hf_select.cli import main
    module_name, attribute, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    def slow(*args, **kwargs):  # a slower model: the signal finds the job mid-way
        time.sleep(0.3)
        return original(*args, **kwargs)
    setattr(owner, name, slow)
    if "data-whisperer" in argv:
        from hf_select.data_whisperer.scorer import DataWhisperer
        DataWhisperer.generate_fn = staticmethod(lambda ids: " 0\\nAnswer 2: 2")
    sys.exit(main(argv))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("job", sorted(JOBS))
def test_an_external_sigterm_in_a_subprocess(job, world, tmp_path, dw_answers):
    argv, target, pattern, load = JOBS[job]
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *target, *argv(world, out)], env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while _finished(out, pattern) < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    assert _finished(out, pattern) >= 1 and not list(out.rglob("*.tmp"))
    assert main(argv(world, out)) == 0
    assert main(argv(world, tmp_path / "clean")) == 0
    _same(load(out), load(tmp_path / "clean"))
    json.dumps(err)
