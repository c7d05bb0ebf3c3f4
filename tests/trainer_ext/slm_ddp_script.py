"""Run by test_two_processes_equal_one under torchrun: one SLM step per scope, 2 rows per process."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from slm_helpers import packed_rows, student_and_reference, train_one_step

torch.set_num_threads(1)
out = Path(sys.argv[1])
student, ref = student_and_reference()
for scope in ("sequence", "global"):
    model, _ = train_one_step(
        student, packed_rows(), out / scope, ref_model=ref, select_scope=scope, batch_size=2
    )
    if dist.get_rank() == 0:
        torch.save({n: p.detach() for n, p in model.named_parameters()}, out / f"{scope}.pt")
# A live gloo process group torn down at interpreter exit made a rank die now and then with "terminate
# called without an active exception" after its work was done: wait for every rank, then destroy it.
dist.barrier()
dist.destroy_process_group()
