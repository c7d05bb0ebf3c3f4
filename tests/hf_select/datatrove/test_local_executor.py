"""The Local executor of hf_select.datatrove: workers die with their main process (``kill -9`` leaves no
worker writing), ``--tasks 0`` is an error, a ``save_to_disk`` folder is refused with the formats it reads."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from datasets import Dataset

from hf_select.attention_influence.retrieval_heads import RetrievalHeads
from hf_select.cli import main
from hf_select.datatrove import make_executor
from hf_select.interrupt import _alive
from hf_select.testing import tiny_model, tiny_tokenizer

DRIVER = textwrap.dedent(
    """
    import os, sys, time
    from hf_select.datatrove import make_executor

    folder = os.path.dirname(os.path.abspath(__file__))

    def busy(data, rank, world_size):  # a task that scores and writes for a long time
        with open(os.path.join(folder, f"pid-{rank}"), "w") as f:
            f.write(str(os.getpid()))
        for i in range(6000):
            with open(os.path.join(folder, f"count-{rank}"), "w") as f:
                f.write(str(i))
            time.sleep(0.05)
        yield from data or []

    if __name__ == "__main__":
        make_executor([busy], "local", tasks=2, workers=2, logging_dir=os.path.join(folder, "logs")).run()
    """
)


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_kill_9_of_the_main_process_stops_every_worker(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    (tmp_path / "driver.py").write_text(DRIVER)
    main_proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py")], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    pids = [tmp_path / f"pid-{rank}" for rank in range(2)]
    try:
        assert _wait(lambda: all(p.exists() and p.read_text() for p in pids), 240)
        workers = [int(p.read_text()) for p in pids]
        assert all(_alive(pid) for pid in workers) and main_proc.pid not in workers
        main_proc.kill()
        main_proc.wait()
        assert _wait(lambda: not any(_alive(pid) for pid in workers), 30), "a worker outlived its main process"
        counts = [(tmp_path / f"count-{rank}").read_text() for rank in range(2)]
        time.sleep(1.0)
        assert [(tmp_path / f"count-{rank}").read_text() for rank in range(2)] == counts  # nobody writes
    finally:
        main_proc.kill()
        for p in pids:
            if p.exists() and p.read_text() and _alive(int(p.read_text())):
                os.kill(int(p.read_text()), signal.SIGKILL)


@pytest.mark.parametrize(
    "tasks, workers, fragment",
    [(0, -1, "--tasks must be an integer >= 1, got 0"), (-3, -1, "--tasks must be an integer >= 1"),
     (2, 0, "--workers must be an integer >= 1, or -1")],
)  # fmt: skip
def test_tasks_and_workers_are_checked(tasks, workers, fragment):
    with pytest.raises(ValueError, match=fragment):
        make_executor([], "local", tasks=tasks, workers=workers)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("dt")
    tiny_model("llama").save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    Dataset.from_dict({"text": ["one doc here", "another doc"]}).save_to_disk(str(root / "saved"))
    (root / "jsonl").mkdir()
    (root / "jsonl" / "a.jsonl").write_text('{"text": "one doc here", "id": "0"}\n')
    RetrievalHeads.from_scores(torch.rand(2, 4), 0.25).save(root / "heads.json")
    return root


CASES = [
    ("--tasks 0", ["--dataset_name_or_path", "{root}/jsonl", "--tasks", "0"], "--tasks must be an integer >= 1"),
    ("a save_to_disk folder", ["--dataset_name_or_path", "{root}/saved"],
     "is a save_to_disk folder (Arrow files); --executor reads folders of .jsonl(.gz) or .parquet files"),
]  # fmt: skip


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_executor_inputs(argv, fragment, world, capsys):
    argv = [a.format(root=world) for a in argv]
    code = main(["score", "attention-influence", "--model_name_or_path", str(world / "model"), "--heads_file",
                 str(world / "heads.json"), "--executor", "local", "--output_dir", str(world / "out"), *argv])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in " ".join(err.split()) and "Traceback" not in err
    assert not (world / "out" / "logs").exists()  # nothing ran, nothing blocks the corrected re-run
