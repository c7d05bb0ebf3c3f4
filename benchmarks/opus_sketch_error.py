"""Relative error of sketched inner products by update rank (OPUS sketches, issue 15 item 17).

For each sketch kind (``tensor``, ``factored``, ``countsketch``) and each update type (rank 1, rank 4, rank 16,
dense Gaussian, and real per-sample layer updates of a tiny Llama on 64-token windows), draws pairs ``A, B``
with correlation ~0.6 and reports the SD over independent hash seeds of ``<S A, S B> - <A, B>`` divided by
``||A|| ||B||`` (the relative SD; a plain CountSketch has ~``sqrt((1 + rho^2) / m)``).

Run: ``.venv/bin/python benchmarks/opus_sketch_error.py [--dim 512 --seeds 200]``.
"""

from __future__ import annotations

import argparse

import torch

from hf_select.opus.sketch import SKETCH_KINDS, make_sketch


def low_rank_pair(d_out, d_in, rank, gen, corr=0.8):
    """``A = G X^T`` and ``B = G' X'^T`` of the same rank (``rank=None``: dense Gaussian), factors correlated."""
    if rank is None:
        a = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
        return a, corr**2 * a + (1 - corr**4) ** 0.5 * torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    g, x = (torch.randn(rank, d, generator=gen, dtype=torch.float64) for d in (d_out, d_in))
    g2, x2 = (
        corr * f + (1 - corr**2) ** 0.5 * torch.randn(f.shape, generator=gen, dtype=torch.float64) for f in (g, x)
    )
    return g.t() @ x, g2.t() @ x2


def real_pairs(count, gen):
    from hf_select.opus.alignment import block_linear_layers, layer_gradients
    from hf_select.testing import tiny_model

    model = tiny_model("llama", hidden_size=128, intermediate_size=512, num_hidden_layers=2).double()
    layers = block_linear_layers(model)
    layer = next(lay for lay in layers if "up_proj" in lay.name)
    ids = torch.randint(4, 300, (count + 1, 64), generator=gen)
    labels = ids.clone()
    labels[:, 0] = -100
    pos = torch.arange(64).expand_as(ids).clone()
    grads = layer_gradients(model, layers, ids, labels, pos, num_candidates=count)
    u = torch.einsum("bto,bti->boi", grads.output_grads[layer.name][:count], grads.inputs[layer.name][:count])
    return [(u[i], u[i + 1]) for i in range(0, count - 1, 2)], (layer.d_out, layer.d_in)


def model_pairs(path, texts, count, layer_name="up_proj", layer_index=15, window=64):
    """Per-sample updates of one block Linear of a real model on ``window``-token windows of real texts."""
    from hf_select.loading import load_causal_lm, load_tokenizer
    from hf_select.opus.alignment import block_linear_layers, layer_gradients

    model = load_causal_lm(path).float().eval()
    tok = load_tokenizer(path)
    layers = block_linear_layers(model)
    layer = next(lay for lay in layers if lay.name == f"layers.{layer_index}.mlp.{layer_name}")
    ids = [tok(t, add_special_tokens=False).input_ids[:window] for t in texts]
    ids = torch.tensor([r for r in ids if len(r) == window][: count + 1])
    labels = ids.clone()
    labels[:, 0] = -100
    pos = torch.arange(window).expand_as(ids).clone()
    grads = layer_gradients(model, [layer], ids, labels, pos, num_candidates=ids.shape[0] - 1)
    n = ids.shape[0] - 1
    u = torch.einsum("bto,bti->boi", grads.output_grads[layer.name][:n], grads.inputs[layer.name][:n]).double()
    s = torch.linalg.svdvals(u[0])
    effective_rank = float(s.sum() ** 2 / (s**2).sum())
    return [(u[i], u[i + 1]) for i in range(0, n - 1, 2)], (layer.d_out, layer.d_in), effective_rank


def relative_sd(kind, pairs, d_out, d_in, dim, seeds):
    errs = []
    for a, b in pairs:
        exact = float((a * b).sum())
        scale = float(a.norm() * b.norm())
        est = []
        for seed in range(seeds):
            sk = make_sketch(kind, d_out, d_in, dim, seed=seed)
            est.append(float(sk.sketch_dense(a) @ sk.sketch_dense(b)))
        errs.append(torch.tensor(est, dtype=torch.float64).sub(exact).pow(2).mean().sqrt() / scale)
    return float(torch.stack(errs).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--d_out", type=int, default=64)
    parser.add_argument("--d_in", type=int, default=96)
    parser.add_argument("--model", default=None, help="also real per-sample updates of this model (e.g. SmolLM2)")
    parser.add_argument("--texts", default=".hf_select_cache/world/pretrain", help="datasets.load_from_disk dir")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    cases = {}
    for name, rank in (("rank 1", 1), ("rank 4", 4), ("rank 16", 16), ("dense", None)):
        cases[name] = ([low_rank_pair(args.d_out, args.d_in, rank, gen) for _ in range(args.pairs)], (args.d_out, args.d_in))
    cases["tiny llama per-sample"] = real_pairs(2 * args.pairs, gen)
    if args.model:
        from datasets import load_from_disk

        data = load_from_disk(args.texts)
        data = data["train"] if hasattr(data, "keys") else data
        pairs, shape, erank = model_pairs(args.model, data["text"][:200], 2 * args.pairs)
        print(f"{args.model}: up_proj of block 15, effective rank of a 64-token per-sample update {erank:.1f}")
        cases["model per-sample"] = (pairs, shape)
    print(f"relative SD of <S A, S B> / (|A||B|), sketch dim {args.dim}, {args.seeds} seeds, {args.pairs} pairs")
    print(f"{'update':<26}" + "".join(f"{k:>13}" for k in SKETCH_KINDS))
    for name, (pairs, (d_out, d_in)) in cases.items():
        row = [relative_sd(k, pairs, d_out, d_in, args.dim, args.seeds) for k in SKETCH_KINDS]
        print(f"{name + f' {d_out}x{d_in}':<26}" + "".join(f"{v:>13.4f}" for v in row))


if __name__ == "__main__":
    main()
