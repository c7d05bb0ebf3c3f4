"""The hf-select trainers under the Trainer's own FSDP2 path (accelerate's FSDP plugin, ``fully_shard``).

accelerate enables FSDP only on accelerator devices; :func:`hf_select.testing.enable_fsdp_on_cpu` lifts that one
gate so that the real path (``fsdp=True``, ``fsdp_config={"version": 2}``: sharded parameters, gradients and
optimizer state, sharded checkpoints) runs here on CPU under gloo. The 2-process runs (``fsdp_worker.py``) are
slow tests; the quick tests check the pieces in one process.

Figures measured on this machine (tiny Llama, 3 optimizer steps, SGD lr 0.5, max |weight difference|, GA 1 /
GA 2): SLM global scope, precomputed and online reference, FSDP 2 processes vs 1 process: 1.3e-8 / 1.1e-8;
MeCo: 1.5e-8 / 1.1e-8; OPUS AdamW (lr 1e-2) FSDP vs DDP: 6.0e-8 / 1.3e-6, identical selections; resumed vs
uninterrupted: 0.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hf_select.opus.alignment import layer_statistics
from hf_select.opus.gradients import ScoredLayer
from hf_select.opus.preconditioners import LayerPreconditioner
from hf_select.opus.sketch import make_sketch
from hf_select.testing import run_torchrun, tiny_model
from hf_select.trainer_ext.sharding import check_parallelism

WORKER = Path(__file__).with_name("fsdp_worker.py")
ROOT = Path(__file__).parents[2]
TOLERANCE = 1e-5
_RUNS: dict[tuple, Path] = {}


def _run(tmp_root: Path, method: str, mode: str, ga: int, resume: bool = False) -> Path:
    """Run the worker once per configuration (cached for the session) and return its output folder."""
    key = (method, mode, ga, resume)
    if key in _RUNS:
        return _RUNS[key]
    out = tmp_root / "-".join(map(str, key))
    args = [out, method, mode, ga] + (["resume"] if resume else [])
    env = {"PYTHONPATH": str(ROOT)}
    if mode == "single":
        import os

        done = subprocess.run(
            [sys.executable, str(WORKER), *map(str, args)],
            env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
    else:
        done = run_torchrun(WORKER, *args, env=env, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    _RUNS[key] = out
    return out


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "weights.pt")


def _info(out: Path, rank: int = 0) -> dict:
    return json.loads((out / f"info_{rank}.json").read_text())


def max_weight_difference(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert set(wa) == set(wb)
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fsdp")


# ------------------------------------------------------------------------------------------- 2 processes


@pytest.mark.slow
@pytest.mark.parametrize("ga", [1, 2])
@pytest.mark.parametrize("method", ["slm_precomputed", "slm_online", "meco"])
def test_two_fsdp_processes_equal_one_process(runs_root, method, ga):
    """3 steps, the same global batch: 2 FSDP ranks x 2 rows vs 1 process x 4 rows (SLM: one global-scope
    threshold over both ranks and all micro-batches)."""
    fsdp, single = _run(runs_root, method, "fsdp", ga), _run(runs_root, method, "single", ga)
    info = _info(fsdp)
    assert info["world_size"] == 2 and info["model_sharded"] and info["global_step"] == 3
    if method == "slm_online":  # the reference is sharded too: each rank holds half of it
        assert info["reference_sharded"]
        assert info["reference_local_numel"] < 0.75 * info["reference_numel"]
    difference = max_weight_difference(fsdp, single)
    print(f"\n{method} GA {ga}: max |FSDP 2 ranks - 1 process| = {difference:.3g}")
    assert difference < TOLERANCE
    initial = {k: v.detach() for k, v in tiny_model("llama", seed=0).named_parameters()}  # the worker's start
    moved = max(float((w - initial[k]).abs().max()) for k, w in _weights(fsdp).items())
    assert moved > 1e-3  # the runs trained: the equality is not vacuous


@pytest.mark.slow
@pytest.mark.parametrize("ga", [1, 2])
@pytest.mark.parametrize("method", ["opus_adamw", "opus_sgd"])
def test_opus_under_fsdp_equals_ddp(runs_root, method, ga):
    """Each OPUS rank selects from its own candidates, so the 1-process reference is the same 2 ranks under DDP
    (which tests/trainer_ext/test_opus_distributed.py checks against a single process). Under FSDP with AdamW
    the second moments are sharded: each rank computes its rows' part of every inner product (no gather, the
    worker fails any DTensor gather during scoring) and one all-reduce completes them."""
    fsdp, ddp = _run(runs_root, method, "fsdp", ga), _run(runs_root, method, "ddp", ga)
    assert _info(fsdp)["model_sharded"] and not _info(ddp)["model_sharded"]
    difference = max_weight_difference(fsdp, ddp)
    print(f"\n{method} GA {ga}: max |FSDP - DDP| = {difference:.3g}")
    assert difference < TOLERANCE
    for rank in (0, 1):
        a, b = _info(fsdp, rank)["opus"], _info(ddp, rank)["opus"]
        assert len(a) == len(b) == 3 * ga
        for x, y in zip(a, b):
            assert x["selected"] == y["selected"]
            scale = max(abs(v) for v in y["alignment"])  # float32 inner products: error relative to the largest
            assert x["alignment"] == pytest.approx(y["alignment"], rel=1e-4, abs=1e-4 * scale)
            assert any(v != 0 for v in x["alignment"])
        sharded = [x["sharded_preconditioner"] for x in a]
        # AdamW has second moments from the first update on; SGD's preconditioner is a scalar
        assert sharded == ([x["step"] > 0 for x in a] if method == "opus_adamw" else [False] * len(a))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["slm_online", "meco", "opus_adamw"])
def test_fsdp_checkpoint_resume_equals_uninterrupted(runs_root, method):
    """Save a sharded checkpoint at step 2, resume from it in a fresh trainer, finish step 3."""
    resumed, straight = _run(runs_root, method, "fsdp", 1, resume=True), _run(runs_root, method, "fsdp", 1)
    assert (resumed / "run" / "checkpoint-2" / "pytorch_model_fsdp_0").is_dir()  # sharded (distcp) checkpoint
    assert _info(resumed)["global_step"] == 3
    difference = max_weight_difference(resumed, straight)
    print(f"\n{method}: max |resumed - uninterrupted| = {difference:.3g}")
    assert difference < TOLERANCE


# ---------------------------------------------------------------------------------------------- quick


@pytest.mark.parametrize("sketched", [False, True])
def test_sharded_adamw_rows_sum_to_the_full_statistics(sketched):
    """What each FSDP rank computes for an AdamW layer: its rows' part of every inner product. The parts of two
    row blocks sum to the unsharded statistics (exactly without a sketch; with a sketch, each part is the
    sketch of a zero-padded block, so the sum is another unbiased estimate: checked against the exact values
    over many sketch seeds)."""
    gen = torch.Generator().manual_seed(0)
    d_out, d_in, n, proxy, tokens = 6, 5, 3, 2, 4
    weight = torch.nn.Parameter(torch.randn(d_out, d_in, generator=gen))
    layer = ScoredLayer("layers.0.q", torch.nn.Linear(d_in, d_out), weight, False)
    x = torch.randn(n + proxy, tokens, d_in, generator=gen, dtype=torch.float64)
    gy = torch.randn(n + proxy, tokens, d_out, generator=gen, dtype=torch.float64)
    dense = torch.rand(d_out, d_in, generator=gen, dtype=torch.float64) + 0.5
    full = layer_statistics(layer, x, gy, LayerPreconditioner(dense=dense), n)
    blocks = [(0, 0, 4), (0, 4, 6)]

    def parts(sketch):
        out = [
            layer_statistics(
                layer, x, gy, LayerPreconditioner(dense=dense[a:b], block=(dim, a, b)), n, sketch, exact_elements=0
            )
            for dim, a, b in blocks
        ]
        return sum(p[0] for p in out), sum(p[1] for p in out)

    if not sketched:
        alignment, gram = parts(None)
        torch.testing.assert_close(alignment, full[0])
        torch.testing.assert_close(gram, full[1])
        return
    trials = [parts(make_sketch("countsketch", d_out, d_in, 16, seed=s)) for s in range(400)]
    mean_alignment = torch.stack([t[0] for t in trials]).mean(0)
    spread = torch.stack([t[0] for t in trials]).std(0) / math.sqrt(len(trials))
    assert ((mean_alignment - full[0]).abs() <= 4 * spread + 1e-9).all()


def test_deepspeed_and_fsdp1_are_refused():
    with pytest.raises(ValueError, match="DeepSpeed"):
        check_parallelism(SimpleNamespace(is_deepspeed_enabled=True), "SLMTrainer")
    plugin = SimpleNamespace(fsdp_version=1)
    fsdp1 = SimpleNamespace(
        is_deepspeed_enabled=False,
        is_fsdp_enabled=True,
        accelerator=SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)),
    )
    with pytest.raises(ValueError, match="FSDP1 is untested"):
        check_parallelism(fsdp1, "OPUSTrainer")
    plugin.fsdp_version = 2
    check_parallelism(fsdp1, "OPUSTrainer")


@pytest.mark.skipif(getattr(torch.optim, "Muon", None) is None, reason="torch.optim.Muon missing")
def test_opus_refuses_muon_under_fsdp(tmp_path):
    from datasets import Dataset

    from hf_select.trainer_ext import OPUSConfig, OPUSTrainer

    rows = Dataset.from_dict({"input_ids": [[5, 6, 7, 8]] * 4})
    args = OPUSConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=2)
    model = tiny_model("llama")
    matrices = [p for p in model.parameters() if p.ndim == 2]
    trainer = OPUSTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        proxy_dataset=rows,
        optimizers=(torch.optim.Muon(matrices, lr=0.01), None),
    )
    trainer.is_fsdp_enabled = True  # what the Trainer sets under FSDP
    with pytest.raises(ValueError, match="Muon preconditioner is not supported under FSDP"):
        trainer._setup_opus(model)
