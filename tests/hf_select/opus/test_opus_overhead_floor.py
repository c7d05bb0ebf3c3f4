"""The cost floor printed by benchmarks/opus_overhead.py."""

import importlib.util
from argparse import Namespace
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[3] / "benchmarks" / "opus_overhead.py"


def _load():
    spec = importlib.util.spec_from_file_location("opus_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_floor_is_one_plus_token_ratio_times_pass_cost_ratio():
    bench = _load()
    args = Namespace(batch=8, seq=256, window=64, proxy=8)
    floor, tokens, cost = bench.floor_ratio(args, {"full": 2.0, "activation_only": 1.5})
    # scoring tokens: (2 x 8 candidates + 8 proxy rows) x 64 = 1536; training tokens 8 x 256 = 2048
    assert tokens == pytest.approx(1536 / 2048) and cost == pytest.approx(0.75)
    assert floor == pytest.approx(1 + 0.75 * 0.75)
