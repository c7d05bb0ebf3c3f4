"""Throughput of the AttentionInfluence scorer vs one plain forward pass and vs the naive method.

Same model, data and batch in one run; the three methods are timed in interleaved rounds (median reported) so
that machine load affects them alike. The scorer runs the layers below the lowest masked layer once and the
upper layers twice; the naive method runs two full forward passes (the second masked). Target: scorer time
<= (1 + share of layers at or above the lowest masked layer) x plain, +10%; faster than naive whenever the
lowest masked layer is above 0.

    python benchmarks/ai_throughput.py [--layers 8 --hidden 128 --seq 256 --batch 8 --rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hf_select.attention_influence.scorer import base_and_reference_losses
from hf_select.testing import tiny_model
from hf_select.token_loss import per_token_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads_per_layer", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--masked_layers", type=str, default="5,6,7", help="layers of the masked heads")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = tiny_model(
        "llama",
        num_hidden_layers=args.layers,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_attention_heads=args.heads_per_layer,
        num_key_value_heads=args.heads_per_layer // 2,
        max_position_embeddings=max(512, args.seq),
    )
    torch.manual_seed(0)
    ids = torch.randint(4, 300, (args.batch, args.seq))
    mask = torch.ones_like(ids)
    tokens = int(mask.sum())
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: llama, {args.layers} layers, hidden {args.hidden}, {params / 1e6:.2f}M params; "
        f"batch {args.batch} x {args.seq} tokens; {args.threads} thread(s)"
    )
    for masked in (args.masked_layers, "0,7"):
        layers = [int(x) for x in masked.split(",")]
        heads = [(layer, h) for layer in layers for h in (0, 3)]
        lowest = min(layers)
        methods = {
            "plain forward": lambda: per_token_loss(model, ids, mask),
            "scorer (reuse lower layers)": lambda heads=heads: base_and_reference_losses(
                model, heads, ids, mask
            ),
            "naive (two full passes)": lambda heads=heads: base_and_reference_losses(
                model, heads, ids, mask, reuse_lower_layers=False
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in methods}
        for fn in methods.values():
            fn()  # warm-up
        for _ in range(args.rounds):
            for name, fn in methods.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(t) for name, t in times.items()}
        share = (args.layers - lowest) / args.layers
        print(
            f"\nmasked heads {heads} (lowest masked layer {lowest}, share of layers at or above: {share:.3f})"
        )
        for name, seconds in median.items():
            print(f"  {name:<30} {tokens / seconds:>10.0f} tokens/s  ({seconds * 1e3:.1f} ms/batch)")
        ratio = median["scorer (reuse lower layers)"] / median["plain forward"]
        naive = median["naive (two full passes)"] / median["plain forward"]
        target = (1 + share) * 1.1
        print(
            f"  scorer / plain = {ratio:.3f} (target <= {target:.3f}: {'OK' if ratio <= target else 'MISSED'}); "
            f"naive / plain = {naive:.3f}; scorer speed-up over naive = {naive / ratio:.3f}x"
        )


if __name__ == "__main__":
    main()
