"""OPUS under Muon: the preconditioned per-sample updates against central finite differences of a real
``torch.optim.Muon`` step.

A tiny float64 Llama gets a few Muon steps (a non-trivial momentum), then for each of 12 candidate rows the
first-order change of one more Muon step in the candidate's gradient is measured by a central finite difference
of a deep copy of the optimizer (``(step(+eps g) - step(-eps g)) / 2 eps``), with Newton-Schulz run in float64
(torch runs it in bfloat16). Printed per preconditioner: the median cosine between the predicted and the
measured update (all block Linear weights concatenated), the Spearman correlation of the 12 candidates'
proxy alignments (predicted vs measured) and the median relative error of the update.

``--ns converged`` uses the cubic Newton-Schulz iteration ``(1.5, -0.5, 0)`` for 60 steps (it converges to
the polar factor); ``--ns default`` uses torch's quintic coefficients and 5 steps.

    python benchmarks/opus_muon_fd.py --ns default
    python benchmarks/opus_muon_fd.py --model .hf_select_cache/models/SmolLM2-135M-Instruct \
        --texts .hf_select_cache/world/pretrain --candidates 8
"""

from __future__ import annotations

import argparse
import contextlib
import copy
from unittest import mock

import torch

CONVERGED_NS = {"ns_coefficients": (1.5, -0.5, 0.0), "ns_steps": 60}


def newton_schulz_float64(grad, ns_coefficients, ns_steps, eps):
    """torch.optim.Muon's Newton-Schulz iteration without its bfloat16 cast."""
    a, b, c = ns_coefficients
    x = grad.double()
    tall = grad.size(0) > grad.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(grad.dtype)


@contextlib.contextmanager
def float64_newton_schulz():
    with mock.patch("torch.optim._muon._zeropower_via_newtonschulz", newton_schulz_float64):
        yield


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def _rows(n, length, seed, vocab=300):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (n, length), generator=gen)
    labels = ids.clone()
    labels[:, 0] = -100
    return ids, labels, torch.arange(length).expand(n, length).clone()


def _text_rows(model_path: str, texts_path: str, count: int, length: int):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    data = load_from_disk(texts_path)
    data = data["train"] if hasattr(data, "keys") else data
    rows = []
    for text in data.select(range(min(len(data), 20 * count)))["text"]:
        ids = tok(text)["input_ids"]
        if len(ids) >= length:
            rows.append(ids[:length])
        if len(rows) == count:
            break
    ids = torch.tensor(rows)
    labels = ids.clone()
    labels[:, 0] = -100
    return ids, labels, torch.arange(length).expand_as(ids).clone()


def setup(
    ns: str = "default",
    seed: int = 0,
    warm_steps: int = 3,
    candidates: int = 12,
    nesterov=True,
    model_path: str | None = None,
    texts_path: str | None = None,
    blocks: int = 4,
):
    """A float64 model, a Muon optimizer after ``warm_steps`` steps, candidate + proxy rows.

    Without ``model_path`` a tiny random Llama on random tokens; with it that checkpoint in float64 (its first
    ``blocks`` blocks under Muon, the rest frozen) on 64-token rows of the ``text`` column of ``texts_path`` (a
    ``datasets`` folder).
    """
    from hf_select.opus.alignment import block_linear_layers
    from hf_select.testing import tiny_model

    if model_path is None:
        model = tiny_model("llama", seed=seed).double()
        layers = block_linear_layers(model)
        warm = [_rows(4, 16, seed=100 + step) for step in range(warm_steps)]
        rows = _rows(candidates + 4, 16, seed=seed + 7)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float64).eval()
        layers = [lay for lay in block_linear_layers(model) if int(lay.name.split(".")[1]) < blocks]
        for p in model.parameters():
            p.requires_grad_(False)
        for lay in layers:
            lay.weight.requires_grad_(True)
        ids, labels, pos = _text_rows(model_path, texts_path, 4 * warm_steps + candidates + 2, 64)
        warm = [(ids[4 * s : 4 * s + 4], labels[4 * s : 4 * s + 4], pos[4 * s : 4 * s + 4]) for s in range(warm_steps)]
        rest = slice(4 * warm_steps, None)
        rows = ids[rest], labels[rest], pos[rest]
    options = CONVERGED_NS if ns == "converged" else {}
    muon = torch.optim.Muon(
        [lay.weight for lay in layers], lr=0.02, momentum=0.95, nesterov=nesterov, **options
    )
    for ids, labels, pos in warm:
        model.zero_grad()
        model(input_ids=ids, labels=labels, position_ids=pos).loss.backward()
        with float64_newton_schulz():
            muon.step()
    model.zero_grad()
    return model, layers, muon, rows, candidates


def finite_difference_updates(muon, layers, grads_per_layer, eps_scale=1e-6) -> list[torch.Tensor]:
    """``-(step(+eps g) - step(-eps g)) / 2 eps`` per layer, from deep copies of ``muon`` (the applied update)."""
    index = {id(p): i for i, p in enumerate(muon.param_groups[0]["params"])}
    norms = [float(muon.state[lay.weight]["momentum_buffer"].norm()) for lay in layers]
    eps = eps_scale * min(n / float(g.norm()) for n, g in zip(norms, grads_per_layer))
    deltas = []
    for sign in (1.0, -1.0):
        opt = copy.deepcopy(muon)
        params = opt.param_groups[0]["params"]
        before = [params[index[id(lay.weight)]].detach().clone() for lay in layers]
        for lay, g in zip(layers, grads_per_layer):
            params[index[id(lay.weight)]].grad = sign * eps * g
        with float64_newton_schulz():
            opt.step()
        deltas.append([params[index[id(lay.weight)]].detach() - b for lay, b in zip(layers, before)])
    return [-(p - m) / (2 * eps) for p, m in zip(*deltas)]


def predicted_updates(pre, per_sample: torch.Tensor) -> torch.Tensor:
    """``u = P g`` for dense per-sample gradients ``[n, d_out, d_in]`` in the weight's coordinates."""
    basis = getattr(pre, "basis", None)
    if basis is not None:
        u, v = basis
        return pre.unrotate(pre.apply(u.t() @ per_sample @ v))
    tensors = [t for t in (pre.left, pre.right, pre.dense) if t is not None]
    dtype = tensors[0].dtype if tensors else per_sample.dtype
    return pre.apply(per_sample.to(dtype)).to(per_sample.dtype)


def figures(
    kind: str, ns: str = "default", seed: int = 0, nesterov: bool = True, **setup_options
) -> dict[str, float]:
    """Median cosine, alignment Spearman and median relative error of ``kind`` against the finite difference.

    ``kind``: a Muon linearisation of :func:`hf_select.opus.preconditioners.build_preconditioners`
    (``"polar"``, ``"newton_schulz"``, ``"one_step"``), ``"default"`` (the installed build's default Muon
    preconditioner, whatever it is: run this script against an older checkout for its figures) or ``"sgd"``
    (the raw gradient). ``setup_options`` go to :func:`setup` (a real checkpoint).
    """
    from hf_select.opus.alignment import (
        build_preconditioners,
        layer_gradients,
        layer_weights,
        per_sample_updates,
    )

    model, layers, muon, (ids, labels, pos), n = setup(ns, seed, nesterov=nesterov, **setup_options)
    grads = layer_gradients(model, layers, ids, labels, pos, n)
    per_sample = {
        lay.name: per_sample_updates(grads.output_grads[lay.name][:n], grads.inputs[lay.name][:n])
        for lay in layers
    }
    proxy = {
        lay.name: per_sample_updates(grads.output_grads[lay.name][n:], grads.inputs[lay.name][n:]).sum(0)
        for lay in layers
    }
    if kind in ("sgd", "default"):
        pre = build_preconditioners(muon, layers, "sgd" if kind == "sgd" else "muon")
    else:
        pre = build_preconditioners(muon, layers, "muon", muon_linearization=kind)
    predicted = {lay.name: predicted_updates(pre[lay.name], per_sample[lay.name]) for lay in layers}
    cosines, errors, true_align, ours_align = [], [], [], []
    for z in range(n):
        true = finite_difference_updates(muon, layers, [per_sample[lay.name][z] for lay in layers])
        t = torch.cat([m.flatten() for m in true])
        p = torch.cat([predicted[lay.name][z].flatten() for lay in layers])
        cosines.append(float(t @ p / (t.norm() * p.norm())))
        errors.append(float((t - p).norm() / t.norm()))
        w = [layer_weights(lay)[0] for lay in layers]
        true_align.append(sum(wi * float((m * proxy[lay.name]).sum()) for wi, m, lay in zip(w, true, layers)))
        ours_align.append(
            sum(wi * float((predicted[lay.name][z] * proxy[lay.name]).sum()) for wi, lay in zip(w, layers))
        )
    return {
        "median_cosine": float(torch.tensor(cosines).median()),
        "spearman": spearman(torch.tensor(true_align), torch.tensor(ours_align)),
        "median_relative_error": float(torch.tensor(errors).median()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", choices=("default", "converged"), default="default")
    parser.add_argument("--kinds", default="default,newton_schulz,polar,one_step,sgd")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--model", default=None, help="a checkpoint folder instead of the tiny random Llama")
    parser.add_argument("--texts", default=None, help="a datasets folder with a 'text' column (with --model)")
    parser.add_argument("--blocks", type=int, default=4, help="blocks of --model under Muon")
    parser.add_argument("--candidates", type=int, default=12)
    args = parser.parse_args()
    real = {"model_path": args.model, "texts_path": args.texts, "blocks": args.blocks} if args.model else {}
    torch.set_num_threads(1)
    print(f"Newton-Schulz: {args.ns}")
    print(f"{'preconditioner':<16}{'seed':>5}{'median cosine':>15}{'spearman':>10}{'median rel err':>16}")
    for kind in args.kinds.split(","):
        for seed in range(args.seeds):
            f = figures(kind, args.ns, seed, candidates=args.candidates, **real)
            print(
                f"{kind:<16}{seed:>5}{f['median_cosine']:>15.4f}{f['spearman']:>10.3f}"
                f"{f['median_relative_error']:>16.2e}"
            )


if __name__ == "__main__":
    main()
