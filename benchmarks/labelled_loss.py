"""Training step: ``LabelledLossTrainer``'s loss (LM head at labelled positions only) vs the stock
``model(**batch).loss``, forward + backward, measured side by side in one run.

The demo's base model (Llama 4 x 128, 8k vocabulary) at its lookup-phase batch (16 x 256) by default, with a
share of the positions labelled (answer-only rows label ~10-25%, copy rows ~75%, plain pretraining 100%).
Median of interleaved repetitions; also checks that both losses agree.

    python benchmarks/labelled_loss.py [--batch 16 --seq 256 --vocab 8192 --hidden 128 --layers 4 --reps 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_select.token_loss import labelled_positions_loss


def build(args):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=args.seq,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).train()


def batch(args, labelled_share: float) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=generator)
    keep = torch.rand(ids.shape, generator=generator) < labelled_share
    return {"input_ids": ids, "labels": torch.where(keep, ids, -100)}


def step(model, inputs, method: str) -> tuple[float, float]:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    if method == "stock":
        loss = model(**inputs, use_cache=False).loss
    else:
        loss = labelled_positions_loss(model, inputs)
    loss.backward()
    return time.perf_counter() - start, loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.25, 0.5, 0.75, 1.0])
    args = parser.parse_args()
    model = build(args)
    print(
        f"Llama {args.layers} x {args.hidden}, vocab {args.vocab}, batch {args.batch} x {args.seq}, "
        f"{torch.get_num_threads()} threads; median of {args.reps} interleaved steps (forward + backward)"
    )
    print(f"{'labelled':>9} {'stock s':>8} {'ours s':>8} {'speed-up':>9} {'|loss diff|':>12}")
    for share in args.shares:
        inputs = batch(args, share)
        for method in ("stock", "labelled"):  # warm-up
            step(model, inputs, method)
        times = {"stock": [], "labelled": []}
        losses = {}
        for _ in range(args.reps):
            for method in times:
                seconds, losses[method] = step(model, inputs, method)
                times[method].append(seconds)
        stock, ours = statistics.median(times["stock"]), statistics.median(times["labelled"])
        print(
            f"{share:>9.0%} {stock:>8.3f} {ours:>8.3f} {stock / ours:>8.2f}x "
            f"{abs(losses['stock'] - losses['labelled']):>12.2e}"
        )


if __name__ == "__main__":
    main()
