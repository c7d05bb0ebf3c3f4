"""datatrove's Ray executor, for real: a local Ray cluster (2 CPUs) started by the run, scores equal to the
single-process ``Dataset.map``, and a Ray worker killed mid-task resumes from its checkpointed chunks.

Skipped without the ``ray`` extra (``pip install 'hf-select[ray]'``, installed by ``make test``). Each run starts
and stops its own cluster (~30-60 s each on 2 cores): the command-line run and the kill/resume run are in the quick
suite so that CI runs them; the example-script run is slow.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("datatrove")
pytest.importorskip("orjson")

from datasets import Dataset

from hf_select.attention_influence import AttentionInfluence, score_dataset
from hf_select.loading import load_causal_lm, load_tokenizer
from hf_select.testing import TINY_WORDS, tiny_model, tiny_tokenizer

SCRIPT = Path(__file__).with_name("pipeline_script.py")
ROOT = Path(__file__).resolve().parents[3]
HEADS = [(1, 0), (1, 2)]  # as in pipeline_script.py
FILES, DOCS_PER_FILE = 4, 6


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    model_dir = root / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    rng = random.Random(1)
    docs = [
        {"id": f"d{f}-{i}", "text": " ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(3, 40)))}
        for f in range(FILES)
        for i in range(DOCS_PER_FILE)
    ]
    inputs = root / "docs"
    inputs.mkdir()
    for f in range(FILES):
        (inputs / f"{f:02d}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs[f::FILES]))
    scorer = AttentionInfluence(load_causal_lm(str(model_dir)), load_tokenizer(str(model_dir)), HEADS, max_length=24)
    expected = {r["id"]: r for r in score_dataset(Dataset.from_list(docs), scorer, batch_size=8).to_list()}
    return {"root": root, "model": model_dir, "inputs": inputs, "expected": expected}


def _scores(folder: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    rows = {}
    for path in sorted(folder.rglob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            assert row["id"] not in rows, f"document {row['id']} written twice"
            rows[row["id"]] = row
    return rows


def _assert_equal_to_map(rows: dict, expected: dict) -> float:
    assert sorted(rows) == sorted(expected)
    worst = 0.0
    for doc_id, row in expected.items():
        assert rows[doc_id]["ai_num_tokens"] == row["ai_num_tokens"]
        worst = max(worst, *(abs(rows[doc_id][k] - row[k]) for k in ("ai_loss_base", "ai_loss_ref", "ai_score")))
    assert worst <= 1e-6, worst
    return worst


def _heads_file(folder: Path) -> Path:
    import torch

    from hf_select.attention_influence.retrieval_heads import RetrievalHeads

    scores = torch.zeros(2, 4)
    for layer, head in HEADS:
        scores[layer, head] = 1.0
    return RetrievalHeads.from_scores(scores, top_fraction=0.25).save(folder / "heads.json")


def test_cli_ray_executor_equals_the_map(world, tmp_path):
    """``hf-select score attention-influence --executor ray`` on a local cluster (``RAY_ADDRESS=local``)."""
    heads = _heads_file(tmp_path)
    (tmp_path / "ray.yaml").write_text("cpus_per_task: 1\nmem_per_cpu_gb: 0.5\n")
    env = {**_env(), "RAY_ADDRESS": "local"}
    argv = [str(Path(sys.executable).with_name("hf-select")), "score", "attention-influence"]
    argv += ["--model_name_or_path", str(world["model"]), "--dataset_name", str(world["inputs"])]
    argv += ["--heads_file", str(heads), "--output_dir", str(tmp_path / "cli"), "--max_length", "24"]
    argv += ["--batch_size", "3", "--executor", "ray", "--tasks", "2", "--workers", "2"]
    argv += ["--executor_config", str(tmp_path / "ray.yaml")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "cli" / "logs" / "completions").glob("*"))) == 2
    _assert_equal_to_map(_scores(tmp_path / "cli" / "scored"), world["expected"])


@pytest.mark.slow
def test_example_script_on_ray_equals_the_map(world, tmp_path):
    heads = _heads_file(tmp_path)
    argv = [sys.executable, str(ROOT / "examples" / "datatrove_scoring.py"), "--method", "ai"]
    argv += ["--input", str(world["inputs"]), "--output", str(tmp_path / "ex"), "--model", str(world["model"])]
    argv += ["--heads", str(heads), "--executor", "ray", "--tasks", "2", "--workers", "2", "--max_length", "24"]
    argv += ["--cpus_per_task", "1", "--mem_per_cpu_gb", "0.5"]
    done = subprocess.run(argv, env={**_env(), "RAY_ADDRESS": "local"}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_equal_to_map(_scores(tmp_path / "ex" / "scored"), world["expected"])


def test_killed_ray_worker_resumes_from_its_checkpointed_chunks(world, tmp_path):
    """Task 1 is slow; once it has checkpointed a chunk, its Ray worker gets SIGKILL (with the pool process in
    which datatrove runs the rank: killing that process alone leaves datatrove's ``multiprocess`` pool waiting
    forever). datatrove's Ray executor resubmits the task, which restores the finished chunks instead of
    scoring them again (measured: 3 of the task's 12 documents restored, 9 scored after the kill)."""
    run_dir, pids = tmp_path / "run", tmp_path / "pids"
    chunk = run_dir / "ckpt" / "00001-of-00002" / "chunk-000000.json"
    cmd = [sys.executable, str(SCRIPT), "ai", str(world["inputs"]), str(run_dir), str(world["model"])]
    cmd += ["--executor", "ray", "--tasks", "2", "--workers", "2", "--docs_per_chunk", "3", "--slow_ranks", "1"]
    cmd += ["--pid_dir", str(pids)]
    deadline = time.time() + 600
    with open(tmp_path / "run.log", "w") as log:
        proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            while not (chunk.exists() and (pids / "1").exists()):
                assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
                assert time.time() < deadline, "task 1 never checkpointed a chunk"
                time.sleep(0.1)
            killed = (pids / "1").read_text()
            for pid in map(int, killed.split()):  # the rank's pool process, then its Ray worker
                os.kill(pid, signal.SIGKILL)
            assert proc.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert (pids / "1").read_text() != killed  # the task ran again, in another worker
    _assert_equal_to_map(_scores(run_dir / "output"), world["expected"])
    stats = json.loads((run_dir / "logs" / "stats" / "00001.json").read_text())
    scorer = next(step for step in stats if "SCORER" in step["name"])["stats"]
    restored = scorer.get("restored_documents", 0)
    restored = restored["total"] if isinstance(restored, dict) else restored
    assert restored >= 3  # at least the checkpointed chunk of 3 documents came back without re-scoring
