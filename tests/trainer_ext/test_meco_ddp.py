"""MeCo under data parallelism: ``torchrun --nproc_per_node 2`` (gloo, CPU)."""

import json
import textwrap

import pytest

from hf_select.testing import run_torchrun

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from datasets import Dataset
    from hf_select.packing import pack_documents
    from hf_select.testing import tiny_model
    from hf_select.trainer_ext import MeCoConfig, MeCoTrainer

    torch.set_num_threads(1)
    out = sys.argv[1]

    def pool(low, seed):
        g = torch.Generator().manual_seed(seed)
        docs = [torch.randint(low, low + 100, (8,), generator=g).tolist() for _ in range(40)]
        return Dataset.from_dict(pack_documents(docs, 16))

    class Recording(MeCoTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            self.seen = getattr(self, "seen", []) + [(self.state.global_step, inputs["input_ids"].tolist())]
            return super().compute_loss(model, inputs, *args, **kwargs)

    args = MeCoConfig(output_dir=out, max_steps=6, per_device_train_batch_size=2, cooldown_fraction=0.5,
                      max_length=16, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                      logging_steps=1, ddp_backend="gloo")
    trainer = Recording(tiny_model("llama"), args, train_dataset=pool(10, 1), cooldown_dataset=pool(200, 2))
    trainer.train()
    rank = int(os.environ["RANK"])
    params = float(sum(p.double().sum() for p in trainer.model.parameters()))
    schedule = list(trainer.train_dataset["input_ids"])
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"seen": trainer.seen, "params": params, "schedule": schedule}, f)
    torch.distributed.barrier()  # then destroy: a live gloo group at exit can abort the process
    torch.distributed.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_ranks_split_each_step_of_the_schedule(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    done = run_torchrun(script, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["params"] == pytest.approx(ranks[1]["params"])  # replicas stay in sync
    schedule = ranks[0]["schedule"]
    global_batch = 2 * 2
    for step in range(6):
        rows = sorted(row for r in ranks for s, ids in r["seen"] if s == step for row in ids)
        expected = sorted(schedule[step * global_batch : (step + 1) * global_batch])
        assert [[t for t in row if t] for row in rows] == [[t for t in row if t] for row in expected]
        cooldown = all(t >= 200 for row in rows for t in row if t)
        assert cooldown == (step >= 3)
