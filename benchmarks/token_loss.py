"""Per-token loss: hf_select.per_token_loss vs the plain ``model(...).logits`` + cross-entropy.

Measured side by side in one run, on a Llama-style model with a 32k vocabulary at batch 8 x 1024 (defaults).
Throughput: median of interleaved repetitions. Peak memory: each method runs in a fresh subprocess and reports
its peak resident memory above the level after loading the model and inputs (VmHWM).

    python benchmarks/token_loss.py [--batch 8 --seq 1024 --vocab 32000 --hidden 256 --layers 2 --reps 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from hf_select.token_loss import per_token_loss


def build(args):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=args.seq,
    )
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, args.vocab, (args.batch, args.seq))
    mask = torch.ones_like(ids)
    return model, ids, mask


def plain(model, ids, mask):
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        vocab = logits.shape[-1]
        return F.cross_entropy(
            logits[:, :-1].float().reshape(-1, vocab), ids[:, 1:].reshape(-1), reduction="none"
        )


def ours(model, ids, mask):
    return per_token_loss(model, ids, mask).losses


METHODS = {"plain": plain, "per_token_loss": ours}


def rss_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM: per process image, unlike ru_maxrss which a child
    inherits from its parent across fork + exec)."""
    try:
        with open("/proc/self/status") as status:
            line = next(x for x in status if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args):
    """Run one method once in this (fresh) process and print its peak memory above the baseline."""
    torch.set_num_threads(args.threads)
    model, ids, mask = build(args)
    METHODS["plain"](model, ids[:1, :16], mask[:1, :16])  # warm up kernels with a tiny input
    METHODS["per_token_loss"](model, ids[:1, :16], mask[:1, :16])
    base = rss_mb()
    METHODS[args.child](model, ids, mask)
    print(json.dumps({"peak_mb": rss_mb() - base}))


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=list(METHODS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    torch.set_num_threads(args.threads)
    model, ids, mask = build(args)
    reference = plain(model, ids, mask).view(args.batch, -1)
    got = ours(model, ids, mask)[:, 1:]
    max_diff = (reference - got).abs().max().item()
    times = {name: [] for name in METHODS}
    for _ in range(args.reps):
        for name, fn in METHODS.items():
            start = time.perf_counter()
            fn(model, ids, mask)
            times[name].append(time.perf_counter() - start)
    tokens = args.batch * args.seq
    peaks = {}
    for name in METHODS:
        cmd = [sys.executable, __file__, "--child", name] + [
            f"--{k}={getattr(args, k)}" for k in ("batch", "seq", "vocab", "hidden", "layers", "threads")
        ]
        peaks[name] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)[
            "peak_mb"
        ]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"model: Llama {params:.1f}M params, vocab {args.vocab}, batch {args.batch} x {args.seq}, {args.threads} threads"
    )
    print(f"max |difference| of per-token losses: {max_diff:.2e}")
    print(f"{'method':<16}{'median s':>10}{'tokens/s':>12}{'peak MB':>10}")
    for name in METHODS:
        median = statistics.median(times[name])
        print(f"{name:<16}{median:>10.3f}{tokens / median:>12.0f}{peaks[name]:>10.0f}")
    speed = statistics.median(times["plain"]) / statistics.median(times["per_token_loss"])
    print(f"throughput ratio per_token_loss / plain: {speed:.2f}x (target >= 0.95x)")
    print(
        f"peak memory ratio per_token_loss / plain: {peaks['per_token_loss'] / peaks['plain']:.2f}x (target <= 0.5x)"
    )


if __name__ == "__main__":
    main()
