"""Run under ``torchrun --nproc_per_node 2``: evaluate tiny tasks data-parallel; rank 0 writes the results.

``tiny_evaluation`` is also what the test runs in one process, so both sides evaluate the same thing.
"""

import json
import sys

import torch

from hf_select.eval import evaluate
from hf_select.testing import tiny_model, tiny_tokenizer

PERPLEXITY_TASK = {
    "name": "ppl",
    "type": "perplexity",
    "data": {
        "test": [
            {"text": t, "domain": d}
            for t, d in [("def add(a, b):", "code"), ("The quick fox.", "web"), ("2 + 2 = 4", "math")]
        ]
    },
}


def tiny_evaluation(task_file) -> dict:
    return evaluate(
        tiny_model("llama"),
        tiny_tokenizer(),
        [task_file, PERPLEXITY_TASK],
        num_fewshot=2,
        batch_size=3,
        show_progress=False,
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    task_file, out_path = sys.argv[1], sys.argv[2]
    out = tiny_evaluation(task_file)
    if torch.distributed.get_rank() == 0:
        with open(out_path, "w") as handle:
            json.dump(out, handle)
    torch.distributed.barrier()  # then destroy: a live gloo group at exit can abort the process
    torch.distributed.destroy_process_group()
