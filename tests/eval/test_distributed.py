import json
from pathlib import Path

import pytest

from hf_select.eval import evaluate
from hf_select.testing import run_torchrun, tiny_model, tiny_tokenizer

WORKER = Path(__file__).parent / "dp_worker.py"


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(tmp_path, mc_task_file):
    """Real data parallelism: torchrun --nproc_per_node 2 (gloo on CPU). Quick variant: test_harness.py."""
    out_path = tmp_path / "dp.json"
    done = run_torchrun(WORKER, mc_task_file, out_path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
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
