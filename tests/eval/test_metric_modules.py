import math
from pathlib import Path

import evaluate
import pytest

import hf_select.eval

METRICS = Path(hf_select.eval.__file__).parent / "metrics"


def test_accuracy_module_offline():
    metric = evaluate.load(str(METRICS / "accuracy"))
    assert metric.compute(predictions=[0, 1, 2, 1], references=[0, 1, 1, 0]) == {"accuracy": 0.5}


def test_acc_norm_module_matches_harness(tmp_path, mc_records):
    from hf_select.eval import evaluate as run_eval
    from hf_select.testing import tiny_model, tiny_tokenizer

    records = mc_records(5, seed=4)
    out = run_eval(
        tiny_model("llama"),
        tiny_tokenizer(),
        [{"name": "m", "type": "multiple_choice", "data": {"test": records}}],
        log_samples=True,
        show_progress=False,
    )
    metric = evaluate.load(str(METRICS / "acc_norm"))
    got = metric.compute(
        predictions=[s["loglikelihoods"] for s in out["samples"]["m"]],
        references=[r["gold"] for r in records],
        choices=[r["choices"] for r in records],
    )
    assert got == pytest.approx({k: out["results"]["m"][k] for k in ("acc", "acc_norm")})
    # hand case: raw argmax picks choice 0, per character choice 1 wins
    assert metric.compute(predictions=[[-2.0, -3.0]], references=[1], choices=[["ab", "abcdefgh"]]) == {
        "acc": 0.0,
        "acc_norm": 1.0,
    }


def test_bits_per_byte_module_pools_over_items():
    metric = evaluate.load(str(METRICS / "bits_per_byte"))
    got = metric.compute(nll=[math.log(2) * 8, math.log(2) * 4], num_bytes=[4, 2])
    assert got["bits_per_byte"] == pytest.approx(2.0)
