import json
import sys
from pathlib import Path

import pytest

from hf_select.testing import run_torchrun

WORKER = Path(__file__).parent / "dp_worker.py"
sys.path.insert(0, str(WORKER.parent))
from dp_worker import tiny_evaluation  # noqa: E402


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(tmp_path, mc_task_file):
    """Real data parallelism: torchrun --nproc_per_node 2 (gloo on CPU). Quick variant: test_harness.py."""
    out_path = tmp_path / "dp.json"
    done = run_torchrun(WORKER, mc_task_file, out_path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    distributed = json.loads(out_path.read_text())
    single = tiny_evaluation(mc_task_file)
    assert distributed["config"]["num_processes"] == 2
    assert distributed["results"]["mc"] == single["results"]["mc"]
    dist_ppl, single_ppl = distributed["results"]["ppl"], single["results"]["ppl"]
    assert dist_ppl["bits_per_byte"] == pytest.approx(single_ppl["bits_per_byte"], rel=1e-6)
    for domain, values in single_ppl["domains"].items():
        assert dist_ppl["domains"][domain] == pytest.approx(values, rel=1e-6)
