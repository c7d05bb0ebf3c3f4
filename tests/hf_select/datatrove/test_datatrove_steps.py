"""hf_select.datatrove: the datatrove steps give the Dataset.map scores, resume after kill -9, feed SLMTrainer.

Runs real LocalPipelineExecutor jobs (tasks=4, workers=2) on a tiny llama saved to a temporary folder, through
``pipeline_script.py`` in a subprocess (so that a test can kill the whole executor with SIGKILL).
"""

import importlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("datatrove")
pytest.importorskip("orjson")

from datasets import Dataset

from hf_select.attention_influence import SCORE_COLUMNS, AttentionInfluence, score_dataset
from hf_select.loading import load_causal_lm, load_tokenizer
from hf_select.testing import TINY_WORDS, tiny_model, tiny_tokenizer

SCRIPT = Path(__file__).with_name("pipeline_script.py")
HEADS = [(1, 0), (1, 2)]  # as in pipeline_script.py
FILES, DOCS_PER_FILE, TASKS = 8, 6, 4


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _texts(rng, count):
    return [" ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(1, 40))) for _ in range(count)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny llama + tokenizer saved to a folder, the AI input (8 JSONL files of documents) and the RHO-1
    input (the packed training rows of the same documents, 8 JSONL files)."""
    from hf_select.slm.jobs import training_rows

    root = tmp_path_factory.mktemp("dtrove")
    model_dir = root / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    rng = random.Random(0)
    docs = [
        {"id": f"d{f}-{i}", "text": text, "domain": rng.choice(["web", "math"])}
        for f in range(FILES)
        for i, text in enumerate(_texts(rng, DOCS_PER_FILE))
    ]
    ai_in = root / "ai_in"
    ai_in.mkdir()
    rows = training_rows(Dataset.from_list(docs), tiny_tokenizer(), "text", 24).to_list()
    rows = [{"id": f"row{i:04d}", **row} for i, row in enumerate(rows)]
    ref_in = root / "ref_in"
    ref_in.mkdir()
    for f in range(FILES):
        for folder, items in ((ai_in, docs), (ref_in, rows)):
            with open(folder / f"{f:02d}.jsonl", "w") as out:
                for item in items[f::FILES]:
                    out.write(json.dumps(item) + "\n")
    return {"root": root, "model": model_dir, "docs": docs, "rows": rows, "ai_in": ai_in, "ref_in": ref_in}


def _run(kind, world, run_dir, *extra):
    inputs = world["ai_in"] if kind == "ai" else world["ref_in"]
    cmd = [sys.executable, str(SCRIPT), kind, str(inputs), str(run_dir), str(world["model"]), *extra]
    return cmd


def _run_to_end(kind, world, run_dir):
    done = subprocess.run(_run(kind, world, run_dir), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _output(run_dir) -> dict[str, dict]:
    """id -> row of every parquet output file (fails on a duplicated id)."""
    import pyarrow.parquet as pq

    rows: dict[str, dict] = {}
    for path in sorted((Path(run_dir) / "output").glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            assert row["id"] not in rows, f"document {row['id']} written twice"
            rows[row["id"]] = row
    return rows


def _stats(run_dir, rank) -> dict:
    data = json.loads((Path(run_dir) / "logs" / "stats" / f"{rank:05d}.json").read_text())
    scorer = next(step for step in data if "SCORER" in step["name"])["stats"]
    return {k: (v["total"] if isinstance(v, dict) else v) for k, v in scorer.items()}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.fixture(scope="module")
def clean_runs(world):
    """Uninterrupted runs of both pipelines (the reference output of the kill/resume tests)."""
    out = {}
    for kind in ("ai", "ref"):
        run_dir = world["root"] / f"clean_{kind}"
        _run_to_end(kind, world, run_dir)
        out[kind] = run_dir
    return out


# ---- AttentionInfluence ------------------------------------------------------------------------------------


def test_local_executor_matches_single_process_map(world, clean_runs):
    model = load_causal_lm(str(world["model"]))
    tokenizer = load_tokenizer(str(world["model"]))
    scorer = AttentionInfluence(model, tokenizer, HEADS, max_length=24, batch_size=5)
    expected = score_dataset(Dataset.from_list(world["docs"]), scorer, batch_size=16).to_list()
    got = _output(clean_runs["ai"])
    assert sorted(got) == sorted(d["id"] for d in world["docs"])
    worst = 0.0
    for row in expected:
        out = got[row["id"]]
        assert out["ai_num_tokens"] == row["ai_num_tokens"] and out["ai_too_short"] == row["ai_too_short"]
        for name in ("ai_loss_base", "ai_loss_ref", "ai_score"):
            worst = max(worst, abs(out[name] - row[name]))
    assert worst <= 1e-6, worst
    stats = [_stats(clean_runs["ai"], rank) for rank in range(TASKS)]
    assert sum(s["documents"] for s in stats) == len(expected)
    assert sum(s["tokens"] for s in stats) == sum(r["ai_num_tokens"] for r in expected)


def _kill_mid_way(kind, world, run_dir):
    """Start a run whose tasks 2 and 3 are slow; SIGKILL the executor's whole process group once tasks 0 and 1
    are complete and task 2 or 3 has a checkpointed chunk but no completion marker."""
    completions = Path(run_dir) / "logs" / "completions"
    chunks = [Path(run_dir) / "ckpt" / f"{r:05d}-of-{TASKS:05d}" / "chunk-000000.json" for r in (2, 3)]
    deadline = time.time() + 400
    with open(Path(str(run_dir) + ".log"), "w") as log:
        proc = subprocess.Popen(
            _run(kind, world, run_dir, "--slow_ranks", "2,3"),
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            while True:
                assert proc.poll() is None, "the run ended before it could be killed"
                assert time.time() < deadline, "the run did not reach the kill point in time"
                done = {p.name for p in completions.glob("*")} if completions.exists() else set()
                if {"00000", "00001"} <= done and any(c.exists() for c in chunks):
                    break
                time.sleep(0.1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the executor and its pool workers (one process group)
            proc.wait()
    done = {p.name for p in completions.glob("*")}
    assert done == {"00000", "00001"}, f"tasks 2 and 3 must be unfinished at the kill, completions: {done}"


def _kill_and_resume(kind, world, clean_dir, run_dir):
    _kill_mid_way(kind, world, run_dir)
    logs = Path(run_dir) / "logs"
    finished = [logs / "completions" / f"{r:05d}" for r in (0, 1)]
    finished += [logs / "stats" / f"{r:05d}.json" for r in (0, 1)]
    finished += sorted((Path(run_dir) / "output").glob("*_0000[01].parquet"))
    finished += sorted((Path(run_dir) / "ckpt").glob("0000[01]-of-*/*.json"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in finished}
    partial = len(list((Path(run_dir) / "ckpt").glob("0000[23]-of-*/*.json")))
    _run_to_end(kind, world, run_dir)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in finished} == before, "finished tasks re-ran"
    assert {p.name for p in (logs / "completions").glob("*")} == {f"{r:05d}" for r in range(TASKS)}
    resumed, clean = _output(run_dir), _output(clean_dir)
    assert sorted(resumed) == sorted(clean), "documents lost or added"
    for doc_id, row in clean.items():
        assert all(_same(resumed[doc_id][k], v) for k, v in row.items()), doc_id
    restored = sum(_stats(run_dir, r).get("restored_documents", 0) for r in (2, 3))
    counts = {
        "documents": len(resumed),
        "tasks_finished_before_kill": 2,
        "documents_of_finished_tasks": sum(_stats(run_dir, r)["documents"] for r in (0, 1)),
        "checkpointed_chunks_of_killed_tasks": partial,
        "documents_restored_from_chunks": restored,
        "documents_rescored_after_kill": sum(_stats(run_dir, r)["documents"] for r in (2, 3)) - restored,
    }
    print(f"\nkill/resume counts ({kind}): {counts}")
    assert partial >= 1 and restored >= 4  # at least one chunk of docs_per_chunk=4 came from the checkpoint
    return counts


def test_kill_and_resume_attention_influence(world, clean_runs):
    _kill_and_resume("ai", world, clean_runs["ai"], world["root"] / "killed_ai")


# ---- RHO-1 reference losses --------------------------------------------------------------------------------


def _train(rows, tmp_path):
    from hf_select.trainer_ext import SLMConfig, SLMTrainer

    student = tiny_model("llama", seed=1).train()
    args = SLMConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=3,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-2,
        logging_steps=1,
        seed=0,
    )
    trainer = SLMTrainer(model=student, args=args, train_dataset=Dataset.from_list(rows))
    trainer.train()
    return student, trainer.state.log_history


def test_reference_losses_match_compute_reference_losses_and_train_slm_alike(world, clean_runs, tmp_path):
    from hf_select.slm.reference_losses import compute_reference_losses

    columns = ("input_ids", "labels", "position_ids")
    rows = Dataset.from_list([{k: r[k] for k in columns} for r in world["rows"]])
    expected = compute_reference_losses(rows, load_causal_lm(str(world["model"])), batch_size=5).to_list()
    got = _output(clean_runs["ref"])
    assert sorted(got) == [r["id"] for r in world["rows"]]
    ordered = [got[r["id"]] for r in world["rows"]]
    worst = 0.0
    for out, row in zip(ordered, expected):
        assert out["input_ids"] == row["input_ids"] and out["labels"] == row["labels"]
        assert len(out["ref_loss"]) == len(row["ref_loss"])
        worst = max(worst, max(abs(a - b) for a, b in zip(out["ref_loss"], row["ref_loss"])))
    assert worst <= 1e-6, worst
    keep = (*columns, "ref_loss")
    via_map, log_map = _train(expected, tmp_path / "map")
    via_dt, log_dt = _train([{k: r[k] for k in keep} for r in ordered], tmp_path / "dt")
    diff = max((a - b).abs().max().item() for a, b in zip(via_map.parameters(), via_dt.parameters()))
    assert diff <= 1e-6, diff
    losses = [e["loss"] for e in log_map if "loss" in e]
    assert len(losses) == 3 and losses == pytest.approx([e["loss"] for e in log_dt if "loss" in e], abs=1e-6)
    stats = [_stats(clean_runs["ref"], rank) for rank in range(TASKS)]
    assert sum(s["documents"] for s in stats) == len(expected)


def test_kill_and_resume_reference_losses(world, clean_runs):
    _kill_and_resume("ref", world, clean_runs["ref"], world["root"] / "killed_ref")


# ---- in-process checks --------------------------------------------------------------------------------------


def test_step_counts_stats_too_short_rows_and_loads_the_model_once(world, tmp_path):
    from datatrove.data import Document

    from hf_select.datatrove import AttentionInfluenceScorer
    from hf_select.datatrove import steps as steps_module

    folder = tmp_path / "nobos"
    tiny_model("llama").save_pretrained(folder)
    tokenizer = tiny_tokenizer(with_bos=False)
    tokenizer.save_pretrained(folder)
    short = next(w for w in TINY_WORDS if len(tokenizer(w).input_ids) == 1)
    texts = [*_texts(random.Random(1), 5), short]
    step = AttentionInfluenceScorer(str(folder), HEADS, max_length=24, batch_size=2, docs_per_chunk=4, min_tokens=1)
    steps_module._WORKER_MODELS.clear()
    for _ in range(2):  # two tasks in one worker process: one model load
        docs = list(step.run(iter(Document(text=t, id=str(i)) for i, t in enumerate(texts))))
    assert len(steps_module._WORKER_MODELS) == 1
    expected = AttentionInfluence(load_causal_lm(str(folder)), tokenizer, HEADS, 24, 3, min_tokens=1)({"text": texts})
    for i, doc in enumerate(docs):
        for name in SCORE_COLUMNS:
            assert _same(doc.metadata[name], expected[name][i]) or abs(doc.metadata[name] - expected[name][i]) <= 1e-6
    stats = {k: (v.total if hasattr(v, "total") else v) for k, v in step.stats.stats.items()}
    assert stats["documents"] == 2 * len(texts)
    assert stats["too_short"] == 2 and docs[-1].metadata["ai_too_short"]
    assert stats["tokens"] == 2 * sum(expected["ai_num_tokens"])


def test_checkpoint_of_another_run_is_an_error(world, tmp_path):
    from hf_select.datatrove.steps import ChunkCheckpoint

    ckpt = ChunkCheckpoint(tmp_path, 0, 2, "aaa")
    ckpt.save(0, ["x", "y"], [{"v": 1.0}, {"v": float("nan")}])
    assert ckpt.load(0, ["x", "y"])[0] == {"v": 1.0} and math.isnan(ckpt.load(0, ["x", "y"])[1]["v"])
    assert ckpt.load(1, ["z"]) is None
    with pytest.raises(ValueError, match="other documents"):
        ckpt.load(0, ["x", "z"])
    with pytest.raises(ValueError, match="another run"):
        ChunkCheckpoint(tmp_path, 0, 2, "bbb").load(0, ["x", "y"])


def test_missing_datatrove_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "hf_select.datatrove" or m.startswith("hf_select.datatrove.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "datatrove", None)
    with pytest.raises(ImportError, match=r"pip install 'hf-select\[datatrove\]'"):
        importlib.import_module("hf_select.datatrove")


def test_make_executor_sets_threads_and_checks_arguments(world, monkeypatch, tmp_path):
    from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor

    import hf_select.threads
    from hf_select.datatrove import attention_influence_pipeline, make_executor

    def pipeline():
        return attention_influence_pipeline(str(world["ai_in"]), "out", str(world["model"]), HEADS)

    # the one thread rule (hf_select.threads): 8 usable cores (affinity and cgroup), 2 workers -> 4 threads each
    monkeypatch.setattr(hf_select.threads, "available_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    steps = pipeline()
    executor = make_executor(steps, "local", tasks=4, workers=2, logging_dir=str(tmp_path / "a"))
    assert isinstance(executor, LocalPipelineExecutor)
    assert steps[1].num_threads == 4
    steps = pipeline()
    make_executor(steps, "local", tasks=3, workers=-1, logging_dir=str(tmp_path / "b"))
    assert steps[1].num_threads == 2  # 3 tasks at once
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a user's cap wins
    steps = pipeline()
    make_executor(steps, "local", tasks=4, workers=2, logging_dir=str(tmp_path / "c"))
    assert steps[1].num_threads == 1
    steps = pipeline()
    slurm = make_executor(
        steps, "slurm", tasks=8, partition="gpu", time="01:00:00", cpus_per_task=4, gpus_per_task=1,
        logging_dir=str(world["root"] / "slurm_logs"),
    )
    assert isinstance(slurm, SlurmPipelineExecutor) and steps[1].num_threads == 4
    with pytest.raises(ValueError, match="partition"):
        make_executor(pipeline(), "slurm", tasks=2)
    with pytest.raises(ValueError, match="executor must be one of"):
        make_executor(pipeline(), "dask")
    with pytest.raises(TypeError, match="Hub id or a local folder"):
        attention_influence_pipeline("in", "out", torch.nn.Linear(1, 1), HEADS)


def _filter_run(folder, pipeline, tasks):
    from datatrove.executor import LocalPipelineExecutor

    LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=str(folder)).run()


def test_top_fraction_filter_equals_select_top_fraction(tmp_path):
    """Two passes (ScoreCollector, then TopFractionFilter) keep exactly select_top_fraction's rows, ties and
    NaN scores included; a second pass with another task layout is refused."""
    import pyarrow.parquet as pq
    from datatrove.pipeline.readers import JsonlReader, ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    from hf_select.datatrove import ScoreCollector, TopFractionFilter
    from hf_select.selection import select_top_fraction

    rng = random.Random(3)
    values = [0.5, 0.5, 0.5, 0.25, 1.0, None, 0.75]  # ties at the cut-off, and unscorable documents (null)
    (tmp_path / "in").mkdir()
    for f in range(4):
        with open(tmp_path / "in" / f"{f}.jsonl", "w") as out:
            for i in range(9):
                doc = {"id": f"{f}-{i}", "text": "x", "domain": rng.choice("ab"), "ai_score": rng.choice(values)}
                out.write(json.dumps(doc) + "\n")
    scores, scored, kept = tmp_path / "scores", tmp_path / "scored", tmp_path / "kept"
    _filter_run(
        tmp_path / "logs1",
        [JsonlReader(str(tmp_path / "in")), ScoreCollector(str(scores)), ParquetWriter(str(scored), expand_metadata=True)],
        tasks=2,
    )
    reader = ParquetReader(str(scored))
    _filter_run(
        tmp_path / "logs2",
        [reader, TopFractionFilter(str(scores), 0.45), ParquetWriter(str(kept), expand_metadata=True)],
        tasks=2,
    )
    # the exact selection over the pass-1 output in task order
    rows = [row for path in sorted(scored.glob("*.parquet")) for row in pq.read_table(path).to_pylist()]
    expected = select_top_fraction(Dataset.from_list(rows), "ai_score", 0.45, by="domain")["id"]
    got = [row["id"] for path in sorted(kept.glob("*.parquet")) for row in pq.read_table(path).to_pylist()]
    assert sorted(got) == sorted(expected) and 0 < len(got) < len(rows)
    tied = [r["id"] for r in rows if r["ai_score"] == 0.5]
    assert any(i in got for i in tied) and not all(i in got for i in tied)  # the ties were split
    with pytest.raises(ValueError, match="same number of tasks"):
        list(TopFractionFilter(str(scores), 0.3).run(iter([]), rank=0, world_size=3))


def test_cli_executor_flag_scores_like_the_pipeline(world, clean_runs, tmp_path):
    """``hf-select score attention-influence --executor local`` writes the same scores as the pipeline."""
    import pyarrow.parquet as pq

    from hf_select.attention_influence.retrieval_heads import RetrievalHeads
    from hf_select.cli import main

    scores = torch.zeros(2, 4)
    for layer, head in HEADS:
        scores[layer, head] = 1.0
    heads = RetrievalHeads.from_scores(scores, top_fraction=0.25).save(tmp_path / "heads.json")
    assert RetrievalHeads.load(heads).selected == HEADS
    out = tmp_path / "cli"
    argv = ["score", "attention-influence", "--model_name_or_path", str(world["model"])]
    argv += ["--dataset_name", str(world["ai_in"]), "--heads_file", str(heads), "--output_dir", str(out)]
    argv += ["--max_length", "24", "--batch_size", "3", "--executor", "local", "--tasks", "2", "--workers", "1"]
    assert main(argv) == 0
    assert len(list((out / "logs" / "completions").glob("*"))) == 2
    got = {r["id"]: r for p in (out / "scored").glob("*.parquet") for r in pq.read_table(p).to_pylist()}
    clean = _output(clean_runs["ai"])
    assert sorted(got) == sorted(clean)
    assert max(abs(got[i]["ai_score"] - clean[i]["ai_score"]) for i in clean) <= 1e-6


def test_slurm_array_job_as_written_runs_its_tasks(world, clean_runs, tmp_path, monkeypatch):
    """The Slurm configuration up to the scheduler: the generated sbatch script asks for an array of ``tasks``
    jobs with the given resources, and each array task, started the way the script starts it
    (``launch_pickled_pipeline executor.pik`` with ``SLURM_ARRAY_TASK_ID``), scores its shard. No sbatch, srun
    or scontrol here: the two array tasks run as local processes (a stub ``scontrol`` names the node)."""
    import datatrove.executor.slurm as slurm

    from hf_select.datatrove import attention_influence_pipeline, make_executor

    scripts = []
    monkeypatch.setattr(slurm, "launch_slurm_job", lambda contents, *_: scripts.append(contents) or "4242")
    pipeline = attention_influence_pipeline(
        str(world["ai_in"]), str(tmp_path / "output"), str(world["model"]), HEADS, max_length=24, batch_size=3
    )
    logs = tmp_path / "logs"
    executor = make_executor(
        pipeline, "slurm", tasks=2, partition="cpu", time="00:20:00", cpus_per_task=1, logging_dir=str(logs)
    )
    executor.run()
    job = scripts[0]
    for directive in ("--array=0-1", "--partition=cpu", "--time=00:20:00", "--cpus-per-task=1"):
        assert f"#SBATCH {directive}" in job, job
    assert "launch_pickled_pipeline" in job and (logs / "executor.pik").exists()
    assert "afterok:4242" in scripts[1]  # the stats-merging job waits for the array
    launcher = Path(sys.executable).with_name("launch_pickled_pipeline")
    fake_bin = tmp_path / "bin"  # datatrove asks `scontrol show hostnames $SLURM_NODELIST` for the node list
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    (fake_bin / "scontrol").chmod(0o755)
    env = {**_env(), "SLURM_NODELIST": "localhost", "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    procs = [
        subprocess.Popen([str(launcher), str(logs / "executor.pik")], env={**env, "SLURM_ARRAY_TASK_ID": str(i)})
        for i in range(2)
    ]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    assert {p.name for p in (logs / "completions").glob("*")} == {"00000", "00001"}
    got, clean = _output(tmp_path), _output(clean_runs["ai"])
    assert sorted(got) == sorted(clean)
    assert max(abs(got[i]["ai_score"] - clean[i]["ai_score"]) for i in clean) <= 1e-6


def test_worker_device_follows_the_local_rank(monkeypatch):
    import multiprocess

    from hf_select.datatrove import worker_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert worker_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("SLURM_LOCALID", raising=False)
    assert worker_device() == "cuda:0"  # no pool: tasks run one after another
    monkeypatch.setattr(multiprocess.current_process(), "_identity", (2,))  # second worker of a pool
    assert worker_device() == "cuda:1"
    monkeypatch.setenv("SLURM_LOCALID", "2")
    assert worker_device() == "cuda:0"
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert worker_device() == "cuda:1"


def test_reference_step_in_process_counts_too_short_rows(world):
    from datatrove.data import Document

    from hf_select.datatrove import ReferenceLossScorer
    from hf_select.slm.reference_losses import compute_reference_losses

    rows = [
        {"input_ids": [1, 5, 6, 7, 8], "labels": [1, 5, -100, 7, 8], "position_ids": [0, 1, 2, 0, 1]},
        {"input_ids": [1]},  # nothing to predict
        {"input_ids": [1, 9, 10], "labels": [-100, -100, -100]},  # nothing trained
        {"input_ids": [1, 11, 12, 13, 14, 15, 16]},
    ]
    step = ReferenceLossScorer(str(world["model"]), batch_size=2, docs_per_chunk=3)
    docs = list(step.run(iter(Document(text="r", id=str(i), metadata=dict(r)) for i, r in enumerate(rows))))
    full = [
        {
            "input_ids": r["input_ids"],
            "labels": r.get("labels", r["input_ids"]),
            "position_ids": r.get("position_ids", list(range(len(r["input_ids"])))),
        }
        for r in rows
    ]
    expected = compute_reference_losses(Dataset.from_list(full), load_causal_lm(str(world["model"])), batch_size=1)
    for doc, ref in zip(docs, expected["ref_loss"]):
        assert max(abs(a - b) for a, b in zip(doc.metadata["ref_loss"], ref)) <= 1e-6
    assert [d.metadata["ref_num_tokens"] for d in docs] == [2, 0, 0, 6]  # restart at t=3, -100 at t=2
    stats = {k: (v.total if hasattr(v, "total") else v) for k, v in step.stats.stats.items()}
    assert stats["documents"] == 4 and stats["too_short"] == 2 and stats["tokens"] == 8
    with pytest.raises(KeyError, match="packed_row_adapter"):
        list(step.run(iter([Document(text="plain text", id="x")])))


# ---- one run per folder, one short-document policy, every flag on every path --------------------------------


def _heads_file(tmp_path):
    from hf_select.attention_influence.retrieval_heads import RetrievalHeads

    scores = torch.zeros(2, 4)
    for layer, head in HEADS:
        scores[layer, head] = 1.0
    return RetrievalHeads.from_scores(scores, top_fraction=0.25).save(tmp_path / "heads.json")


def _cli(model, data, out, heads, *extra):
    from hf_select.cli import main

    argv = ["score", "attention-influence", "--model_name_or_path", str(model), "--dataset_name", str(data)]
    argv += ["--heads_file", str(heads), "--output_dir", str(out), "--max_length", "24", "--batch_size", "3"]
    return main([*argv, *extra])


def _scored(out) -> dict[str, dict]:
    import pyarrow.parquet as pq

    return {r["id"]: r for p in sorted((out / "scored").glob("*.parquet")) for r in pq.read_table(p).to_pylist()}


def test_executor_rerun_with_another_model_never_keeps_stale_scores(world, tmp_path, capsys):
    """Re-running ``--executor local`` with other weights into the same folder is refused (exit 2, naming the
    setting), never "Not doing anything" over the first model's scores."""
    other = tmp_path / "other_model"
    tiny_model("llama", seed=1).save_pretrained(other)
    tiny_tokenizer().save_pretrained(other)
    heads, out = _heads_file(tmp_path), tmp_path / "run"
    executor = ["--executor", "local", "--tasks", "2", "--workers", "1"]
    assert _cli(world["model"], world["ai_in"], out, heads, *executor) == 0
    first = json.dumps(_scored(out), sort_keys=True)  # NaN-safe comparison
    assert _cli(world["model"], world["ai_in"], out, heads, *executor) == 0  # the same run: resumed, unchanged
    assert json.dumps(_scored(out), sort_keys=True) == first
    capsys.readouterr()
    assert _cli(other, world["ai_in"], out, heads, *executor) == 2
    assert "another run" in capsys.readouterr().err
    assert _cli(other, world["ai_in"], out, heads, *executor, "--min_tokens", "3") == 2
    assert json.dumps(_scored(out), sort_keys=True) == first


def test_executor_run_that_reads_nothing_leaves_the_folder_free(world, tmp_path, capsys):
    """A folder datatrove reads no document from (here: JSONL without the text field) is an error, and the
    corrected re-run into the same output folder scores every document."""
    empty = tmp_path / "no_text"
    empty.mkdir()
    (empty / "00.jsonl").write_text("".join(json.dumps({"id": d["id"], "body": d["text"]}) + "\n" for d in world["docs"]))
    heads, out = _heads_file(tmp_path), tmp_path / "run"
    executor = ["--executor", "local", "--tasks", "1", "--workers", "1"]
    assert _cli(world["model"], empty, out, heads, *executor) == 2
    assert "no document" in capsys.readouterr().err
    assert _cli(world["model"], world["ai_in"], out, heads, *executor) == 0
    assert sorted(_scored(out)) == sorted(d["id"] for d in world["docs"])


def test_one_short_document_policy_on_every_path(world, tmp_path):
    """``--min_tokens`` and the whitespace rule give the same ai_too_short and NaN scores on the map path, the
    sharded command path and the datatrove path."""
    from datasets import load_from_disk

    from hf_select.datatrove import AttentionInfluenceScorer

    tokenizer = load_tokenizer(str(world["model"]))
    texts = ["   ", "\n\t ", "fox dog", *[d["text"] for d in world["docs"][:9]]]
    min_tokens = 6
    data = tmp_path / "data"
    data.mkdir()
    (data / "00.jsonl").write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    scorer = AttentionInfluence(load_causal_lm(str(world["model"])), tokenizer, HEADS, 24, 3, min_tokens=min_tokens)
    mapped = scorer({"text": texts})
    n_tokens = [len(ids) - 1 for ids in tokenizer(texts).input_ids]  # predicted tokens (one chunk each)
    expected = [n < min_tokens or not t.strip() for n, t in zip(n_tokens, texts)]
    assert expected[:2] == [True, True] and not all(expected)
    heads = _heads_file(tmp_path)
    flag = ["--min_tokens", str(min_tokens)]
    assert _cli(world["model"], data / "00.jsonl", tmp_path / "sharded", heads, *flag) == 0
    sharded = load_from_disk(str(tmp_path / "sharded" / "scored"))
    assert _cli(world["model"], data, tmp_path / "dt", heads, *flag, "--executor", "local", "--workers", "1") == 0
    dt = _scored(tmp_path / "dt")
    step = AttentionInfluenceScorer(str(world["model"]), HEADS, max_length=24, batch_size=3, min_tokens=min_tokens)
    from datatrove.data import Document

    in_process = [d.metadata for d in step.run(iter(Document(text=t, id=str(i)) for i, t in enumerate(texts)))]
    for path, too_short, scores in (
        ("map", mapped["ai_too_short"], mapped["ai_score"]),
        ("sharded", sharded["ai_too_short"], sharded["ai_score"]),
        ("datatrove", [dt[str(i)]["ai_too_short"] for i in range(len(texts))], [dt[str(i)]["ai_score"] for i in range(len(texts))]),
        ("step", [m["ai_too_short"] for m in in_process], [m["ai_score"] for m in in_process]),
    ):
        assert list(too_short) == expected, path
        assert [math.isnan(s) for s in scores] == expected, path
        assert max(abs(a - b) for a, b, e in zip(scores, mapped["ai_score"], expected) if not e) <= 1e-6, path


FLAGS = {  # flag -> (value, field of AttentionInfluenceConfig and its parsed value)
    "--max_length": ("17", "max_length", 17),
    "--batch_size": ("5", "batch_size", 5),
    "--min_tokens": ("7", "min_tokens", 7),
    "--reuse_lower_layers": ("false", "reuse_lower_layers", False),
    "--heads": ("0:1", "heads", [(0, 1)]),
}


@pytest.mark.parametrize("path", ["sharded", "datatrove"])
@pytest.mark.parametrize("flag", FLAGS)
def test_each_cli_flag_reaches_each_path(world, tmp_path, monkeypatch, flag, path):
    """The command parses one AttentionInfluenceConfig and the scorer of each path runs with exactly it."""
    import hf_select.attention_influence.jobs as jobs
    import hf_select.datatrove.pipelines as pipelines
    from hf_select.attention_influence import AttentionInfluenceConfig

    seen = {}

    def no_sharded_map(dataset, function, *args, **kwargs):
        seen["config"] = function.config
        raise KeyboardInterrupt

    def no_executor(pipeline, *args, **kwargs):
        seen["config"] = next(step for step in pipeline if hasattr(step, "ai_config")).ai_config
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "sharded_map", no_sharded_map)
    monkeypatch.setattr(pipelines, "make_executor", no_executor)
    value, name, parsed = FLAGS[flag]
    extra = [flag, value] + (["--executor", "local"] if path == "datatrove" else [])
    data = world["ai_in"] if path == "datatrove" else world["ai_in"] / "00.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _cli(world["model"], data, tmp_path / "out", _heads_file(tmp_path), *extra)
    config = seen["config"]
    assert isinstance(config, AttentionInfluenceConfig) and getattr(config, name) == parsed
    default = AttentionInfluenceConfig(heads=HEADS, max_length=24, batch_size=3)
    for other in ("max_length", "batch_size", "min_tokens", "reuse_lower_layers", "heads"):
        if other != name:
            assert getattr(config, other) == getattr(default, other), other
