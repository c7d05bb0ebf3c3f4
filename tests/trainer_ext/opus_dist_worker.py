"""Worker of the 2-process OPUS test: trains the real OPUSTrainer under torchrun (gloo, CPU, 1 thread).

Writes ``rank_<r>.json`` (every scored micro-batch: step, micro-batch, candidate rows, proxy rows, selection and
alignments; thread counts; a checksum of the final weights) and, from rank 0, ``initial.pt`` (the weights
before training) to ``argv[1]``.
"""

import json
import os
import sys

import torch
from datasets import Dataset

from hf_select.testing import tiny_model
from hf_select.trainer_ext import OPUSConfig, OPUSTrainer

SEQ = 16
CANDIDATE_KEYS = ("input_ids", "labels", "position_ids")


def rows(n, seed, length=SEQ):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 300, (n, length), generator=gen).tolist()
    return Dataset.from_dict(
        {"input_ids": ids, "labels": [[-100, *r[1:]] for r in ids], "position_ids": [list(range(length))] * n}
    )


def config(out_dir, **kw):
    """Shared by the worker and the single-process check: windows cover whole rows (start 0 on every rank)."""
    base = dict(
        output_dir=out_dir,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=3,
        learning_rate=1e-2,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
        remove_unused_columns=False,
        score_window=SEQ,
        proxy_batch_size=2,
        sketch_dim=512,
        selection="topk",
        ddp_backend="gloo",
        seed=7,
    )
    base.update(kw)
    return OPUSConfig(**base)


class Recording(OPUSTrainer):
    """The real OPUSTrainer; only records what it was given and what it built."""

    def opus_select(self, batch, micro_batch=0):
        self.seen = getattr(self, "seen", [])
        self.seen.append({k: batch[k].tolist() for k in CANDIDATE_KEYS})
        return super().opus_select(batch, micro_batch)

    def _joint_batch(self, batch, step, gen, micro_batch=0):
        joint = super()._joint_batch(batch, step, gen, micro_batch)
        self.seen[-1]["proxy_ids"] = joint[0][batch["input_ids"].shape[0] :].tolist()
        return joint


def main(out_dir):
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    model = tiny_model("llama")
    if rank == 0:
        torch.save(model.state_dict(), os.path.join(out_dir, "initial.pt"))
    trainer = Recording(
        model=model, args=config(os.path.join(out_dir, "run")), train_dataset=rows(64, 1), proxy_dataset=rows(8, 2)
    )
    trainer.train()
    calls = [{**seen, **hist} for seen, hist in zip(trainer.seen, trainer.opus_history)]
    result = {
        "rank": rank,
        "world_size": trainer.args.world_size,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "calls": [{k: v for k, v in c.items() if k != "seconds"} for c in calls],
        "params": float(sum(p.double().sum() for p in trainer.model.parameters())),
        "global_step": trainer.state.global_step,
    }
    with open(os.path.join(out_dir, f"rank_{rank}.json"), "w") as f:
        json.dump(result, f)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()  # no rank tears its group down while another still talks to it
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
