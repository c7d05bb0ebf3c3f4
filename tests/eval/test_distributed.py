import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_select.eval import evaluate
from hf_select.testing import tiny_model, tiny_tokenizer

WORKER = Path(__file__).parent / "dp_worker.py"


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(tmp_path, mc_task_file):
    """Real data parallelism: torchrun --nproc_per_node 2 (gloo on CPU). Quick variant: test_harness.py."""
    out_path = tmp_path / "dp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        str(WORKER),
        str(mc_task_file),
        str(out_path),
    ]
    subprocess.run(cmd, check=True, env=env, cwd=tmp_path, timeout=300)
    distributed = json.loads(out_path.read_text())
    perplexity = {
        "name": "ppl",
        "type": "perplexity",
        "data": {
            "test": [
                {"text": t, "domain": d}
                for t, d in [("def add(a, b):", "code"), ("The quick fox.", "web"), ("2 + 2 = 4", "math")]
            ]
        },
    }
    single = evaluate(
        tiny_model("llama"),
        tiny_tokenizer(),
        [mc_task_file, perplexity],
        num_fewshot=2,
        batch_size=3,
        show_progress=False,
    )
    assert distributed["config"]["num_processes"] == 2
    assert distributed["results"]["mc"] == single["results"]["mc"]
    dist_ppl, single_ppl = distributed["results"]["ppl"], single["results"]["ppl"]
    assert dist_ppl["bits_per_byte"] == pytest.approx(single_ppl["bits_per_byte"], rel=1e-6)
    for domain, values in single_ppl["domains"].items():
        assert dist_ppl["domains"][domain] == pytest.approx(values, rel=1e-6)
