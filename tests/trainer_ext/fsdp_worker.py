"""Worker of the FSDP tests: trains one hf-select trainer for 3 optimizer steps and writes its final weights.

``python fsdp_worker.py OUT METHOD MODE GA [RESUME]`` -- under ``torchrun`` for MODE ``fsdp`` / ``ddp`` (2
processes, 2 rows per process and micro-batch), as a plain process for MODE ``single`` (4 rows per micro-batch:
the same global batch). MODE ``fsdp`` runs the Trainer's own FSDP2 path (``fsdp=True``, ``fsdp_config``
``version: 2``) on CPU/gloo through :func:`hf_select.testing.enable_fsdp_on_cpu`. METHOD is one of
``slm_precomputed``, ``slm_online``, ``meco``, ``opus_adamw``, ``opus_sgd``. With RESUME the run saves a
checkpoint at step 2, and a second trainer resumes from it to step 3.

Writes, from rank 0, ``OUT/weights.pt`` (full weights of the last trainer; gathered from the shards under FSDP)
and ``OUT/info.json`` (world size, whether the model and the online reference were sharded, per-step OPUS
alignments and selections, SLM selected counts).
"""

import json
import os
import sys
from pathlib import Path

import torch
from datasets import Dataset

sys.path.insert(0, str(Path(__file__).parent))
from slm_helpers import packed_rows

from hf_select.packing import pack_documents
from hf_select.testing import enable_fsdp_on_cpu, tiny_model

SEQ = 16
FSDP_CONFIG = {"version": 2, "state_dict_type": "SHARDED_STATE_DICT", "reshard_after_forward": True}


def common_args(out_dir, mode, ga, save):
    distributed = mode != "single"
    args = dict(
        output_dir=out_dir,
        per_device_train_batch_size=2 if distributed else 4,
        gradient_accumulation_steps=ga,
        max_steps=3,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        use_cpu=True,
        report_to="none",
        save_strategy="steps" if save else "no",
        save_steps=2,
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        remove_unused_columns=False,
    )
    if distributed:
        args["ddp_backend"] = "gloo"
    if mode == "fsdp":
        args.update(fsdp=True, fsdp_config=dict(FSDP_CONFIG))
    return args


def opus_rows(n, seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 300, (n, SEQ), generator=gen).tolist()
    return Dataset.from_dict(
        {"input_ids": ids, "labels": [[-100, *r[1:]] for r in ids], "position_ids": [list(range(SEQ))] * n}
    )


def build(method, mode, ga, out_dir, save):
    """The trainer of ``method`` (a fresh model each call, identical weights in every process)."""
    from hf_select.trainer_ext import MeCoConfig, MeCoTrainer, OPUSConfig, OPUSTrainer, SLMConfig, SLMTrainer

    class GuardedOPUS(OPUSTrainer):
        def opus_select(self, batch, micro_batch=0):
            with NoGather():
                return super().opus_select(batch, micro_batch)

    args = common_args(out_dir, mode, ga, save)
    model = tiny_model("llama", seed=0).train()
    if method.startswith("slm"):
        rows = Dataset.from_dict(packed_rows(num_rows=32, length=SEQ, seed=3))
        ref = tiny_model("llama", seed=1)
        if method == "slm_precomputed":
            from hf_select.slm.reference_losses import compute_reference_losses

            rows, ref = compute_reference_losses(rows, ref, batch_size=8), None
        return SLMTrainer(
            model=model, args=SLMConfig(select_scope="global", **args), ref_model=ref, train_dataset=rows
        )
    if method == "meco":
        def pool(low, seed):
            gen = torch.Generator().manual_seed(seed)
            docs = [torch.randint(low, low + 90, (8,), generator=gen).tolist() for _ in range(60)]
            return Dataset.from_dict(pack_documents(docs, SEQ))

        config = MeCoConfig(cooldown_fraction=0.34, max_length=SEQ, **args)
        return MeCoTrainer(model, config, train_dataset=pool(10, 1), cooldown_dataset=pool(200, 2))
    if method.startswith("opus"):
        optimizer = "adamw_torch" if method == "opus_adamw" else "sgd"
        args.update(optim=optimizer, learning_rate=1e-2 if optimizer == "adamw_torch" else 0.5)
        config = OPUSConfig(
            buffer_factor=2.0,
            score_window=SEQ,
            proxy_batch_size=2,
            sketch_dim=None,
            selection="topk",
            **args,
        )
        return GuardedOPUS(model=model, args=config, train_dataset=opus_rows(96, 1), proxy_dataset=opus_rows(8, 2))
    raise ValueError(f"unknown method {method!r}")


class NoGather:
    """Fails any DTensor gather (``full_tensor`` / ``redistribute``) while OPUS scores a micro-batch."""

    def __enter__(self):
        from torch.distributed.tensor import DTensor

        self.saved = {name: getattr(DTensor, name) for name in ("full_tensor", "redistribute")}

        def refuse(*args, **kwargs):
            raise AssertionError("OPUS scoring gathered a sharded tensor")

        for name in self.saved:
            setattr(DTensor, name, refuse)

    def __exit__(self, *exc):
        from torch.distributed.tensor import DTensor

        for name, fn in self.saved.items():
            setattr(DTensor, name, fn)


def full_weights(trainer):
    out = {}
    for name, param in trainer.model.named_parameters():
        value = param.full_tensor() if hasattr(param, "full_tensor") else param
        out[name.removeprefix("module.")] = value.detach().clone()
    return out


def main(out_dir, method, mode, ga, resume=False):
    torch.set_num_threads(1)
    if mode == "fsdp":
        enable_fsdp_on_cpu()
    os.makedirs(out_dir, exist_ok=True)
    trainer = build(method, mode, ga, os.path.join(out_dir, "run"), save=resume)
    trainer.train()
    if resume:
        trainer = build(method, mode, ga, os.path.join(out_dir, "run"), save=resume)
        trainer.train(resume_from_checkpoint=os.path.join(out_dir, "run", "checkpoint-2"))
    weights = full_weights(trainer)
    from torch.distributed.fsdp import FSDPModule

    ref = getattr(trainer, "ref_model", None)
    info = {
        "world_size": trainer.args.world_size,
        "model_sharded": isinstance(trainer.model, FSDPModule),
        "reference_sharded": isinstance(ref, FSDPModule) if ref is not None else None,
        "reference_local_numel": sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel()
                                     for p in ref.parameters()) if ref is not None else None,
        "reference_numel": sum(p.numel() for p in ref.parameters()) if ref is not None else None,
        "global_step": trainer.state.global_step,
        "opus": [
            {k: r[k] for k in ("step", "micro_batch", "alignment", "selected", "sharded_preconditioner")}
            for r in getattr(trainer, "opus_history", [])
        ],
        "logs": [h for h in trainer.state.log_history if "loss" in h],
    }
    rank = int(os.environ.get("RANK", 0))
    if rank == 0:
        torch.save(weights, os.path.join(out_dir, "weights.pt"))
    with open(os.path.join(out_dir, f"info_{rank}.json"), "w") as f:
        json.dump(info, f)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()  # every rank has written its results
        # a gloo group's teardown (destroy_process_group or interpreter exit) hung now and then after the work
        # was done; nothing is left to flush, so leave at once
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), len(sys.argv) > 5 and sys.argv[5] == "resume")
