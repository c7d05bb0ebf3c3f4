"""Worker for the 2-process OPUS consistency test (run with torchrun; gloo). Writes rank_<r>.json to argv[1]."""

import json
import os
import sys

import torch
import torch.distributed as dist

from hf_select.opus.sketch import FactoredCountSketch
from hf_select.opus.utility import (
    block_linear_layers,
    build_preconditioners,
    candidate_statistics,
    layer_gradients,
    select_candidates,
)
from hf_select.testing import tiny_model


def rows(n, seed, length=12):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 300, (n, length), generator=gen)
    labels = ids.clone()
    labels[:, 0] = -100
    return ids, labels, torch.arange(length).expand(n, length).clone()


def select(candidates, rank_seed, step=1):
    """What OPUSTrainer does on one rank: same model/optimizer/proxy everywhere, rank-seeded sampling."""
    model = tiny_model("llama")
    layers = block_linear_layers(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    opt.zero_grad(set_to_none=True)
    pre = build_preconditioners(opt, layers, "adamw", steps_taken=step)
    proxy = rows(2, seed=1000 + step)  # shared proxy batch: seeded by the step only
    joint = [torch.cat([a, b]) for a, b in zip(candidates, proxy)]
    sketches = {
        lay.name: FactoredCountSketch(lay.d_out, lay.d_in, 256, seed=i) for i, lay in enumerate(layers)
    }
    grads = layer_gradients(model, layers, *joint, num_candidates=candidates[0].shape[0])
    stats = candidate_statistics(grads, layers, pre, candidates[0].shape[0], sketches)
    sel = select_candidates(
        stats.alignment, stats.gram, 3, generator=torch.Generator().manual_seed(rank_seed)
    )
    return sel.indices, stats.alignment.tolist()


def main(out_dir):
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    shared, shared_alignment = select(rows(6, seed=1), rank_seed=42)
    own, _ = select(rows(6, seed=10 + rank), rank_seed=100 + rank)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, shared)
    result = {
        "rank": rank,
        "shared": shared,
        "shared_alignment": shared_alignment,
        "own": own,
        "all_shared": gathered,
    }
    with open(os.path.join(out_dir, f"rank_{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()  # no rank tears its group down while another still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])
