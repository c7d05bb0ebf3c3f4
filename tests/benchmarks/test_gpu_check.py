"""benchmarks/gpu_check.py runs on CPU with tiny models, so that the GPU check cannot rot before a GPU is lent."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_gpu_check_measures_every_in_process_section(one_thread):
    results = _module().main(["--device", "cpu", "--tiny", "--sections", "ai,steps,dw"])
    ai = results["attention_influence"]
    assert [r["length"] for r in ai] == [32, 64]
    assert all(r["tokens_per_s"] > 0 and r["plain_tokens_per_s"] > 0 and r["ratio_to_plain"] > 0 for r in ai)
    arms = [r["arm"] for r in results["steps"]]
    assert arms[0] == "plain Trainer" and len(arms) == 3 and results["steps"][0]["ratio"] == 1.0
    assert results["data_whisperer"]["groups"] > 0 and results["data_whisperer"]["seconds_per_group"] > 0


@pytest.mark.slow
def test_tiny_gpu_check_command_line(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "== 3. hf-select harness vs lm-eval" in done.stdout and out.exists()
