"""OPUS under data parallelism: the real ``OPUSTrainer`` under ``torchrun --nproc_per_node 2`` (gloo, CPU).

Each process runs with ``OMP_NUM_THREADS=1`` and one torch thread (``run_torchrun`` sets the former, the worker
the latter, and both are checked).
"""

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from hf_select.testing import run_torchrun, tiny_model

WORKER = Path(__file__).with_name("opus_dist_worker.py")


def _load_worker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("opus_dist_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _single_process_trainer(worker, tmp_path, state_dict=None, **kw):
    from hf_select.trainer_ext import OPUSTrainer

    model = tiny_model("llama")
    if state_dict is not None:
        model.load_state_dict(state_dict)
    trainer = OPUSTrainer(
        model=model,
        args=worker.config(str(tmp_path / "single"), ddp_backend=None, **kw),
        train_dataset=worker.rows(64, 1),
        proxy_dataset=worker.rows(8, 2),
    )
    trainer.create_optimizer()
    return trainer


def test_rank_selection_is_a_deterministic_function_of_rank_inputs(tmp_path):
    """Quick in-process variant on the real trainer: the same buffer, step and micro-batch give the same
    Boltzmann draw; another micro-batch of the step draws from its own stream."""
    worker = _load_worker()
    trainer = _single_process_trainer(worker, tmp_path, selection="boltzmann")
    data = worker.rows(6, seed=11)
    batch = trainer.data_collator([data[i] for i in range(4)])
    a = trainer.opus_select(dict(batch), micro_batch=0)
    b = trainer.opus_select(dict(batch), micro_batch=0)
    assert torch.equal(a["input_ids"], b["input_ids"]) and a["input_ids"].shape[0] == 2
    first, again = trainer.opus_history
    assert first["selected"] == again["selected"] and first["alignment"] == again["alignment"]
    trainer.opus_select(dict(batch), micro_batch=1)
    assert trainer.opus_history[-1]["alignment"] != first["alignment"]  # fresh proxy rows for micro-batch 1


@pytest.mark.slow
def test_two_process_torchrun_drives_the_real_opus_trainer(tmp_path):
    done = run_torchrun(WORKER, tmp_path, env={"PYTHONPATH": str(Path(__file__).parents[2])}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["world_size"] == 2 and r["torch_threads"] == 1 and r["omp_num_threads"] == "1"
        assert r["global_step"] == 3 and len(r["calls"]) == 3 * 2  # one scoring per micro-batch
    assert ranks[0]["params"] == pytest.approx(ranks[1]["params"], rel=1e-12)  # DDP replicas stay in sync
    for c0, c1 in zip(*(r["calls"] for r in ranks)):
        assert (c0["step"], c0["micro_batch"]) == (c1["step"], c1["micro_batch"])
        assert c0["proxy_ids"] == c1["proxy_ids"]  # the same proxy rows on every rank, no communication
        assert c0["input_ids"] != c1["input_ids"]  # each rank scores its own shard
    for r in ranks:  # micro-batches of one step draw their own proxy rows
        by_step = {}
        for c in r["calls"]:
            by_step.setdefault(c["step"], []).append(c["proxy_ids"])
        assert all(p[0] != p[1] for p in by_step.values())
    # before the first update every rank's scoring equals a single-process OPUSTrainer on that rank's buffer
    worker = _load_worker()
    trainer = _single_process_trainer(worker, tmp_path, torch.load(tmp_path / "initial.pt"))
    for r in ranks:
        for call in (c for c in r["calls"] if c["step"] == 0):
            batch = {k: torch.tensor(call[k]) for k in worker.CANDIDATE_KEYS}
            trainer.opus_select(batch, micro_batch=call["micro_batch"])
            mine = trainer.opus_history[-1]
            assert mine["alignment"] == pytest.approx(call["alignment"], rel=1e-5, abs=1e-12)
            assert mine["selected"] == call["selected"]


def test_worker_rows_are_plain_datasets():
    worker = _load_worker()
    assert isinstance(worker.rows(2, 0), Dataset) and len(worker.rows(2, 0)[0]["input_ids"]) == worker.SEQ
