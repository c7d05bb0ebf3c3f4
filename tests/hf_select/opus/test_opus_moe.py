"""OPUS on MoE models: transformers 5's fused 3-D expert weights are scored, exactly against per-row autograd."""

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

from hf_select.opus.alignment import (
    block_linear_layers,
    build_preconditioners,
    candidate_statistics,
    layer_gradients,
    layer_weights,
    row_mean_losses,
    scored_statistics,
)
from hf_select.opus.sketch import TensorCountSketch

_SPEC = importlib.util.spec_from_file_location(
    "conformance_models", Path(__file__).parents[1] / "conformance_models.py"
)
conformance_models = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(conformance_models)
build_family = conformance_models.build_family

MOE_FAMILIES = ("mixtral", "qwen3_moe", "olmoe", "gpt_oss")


def _rows(n, length=10, seed=0, vocab=300):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (n, length), generator=gen)
    labels = ids.clone()
    labels[:, 0] = -100
    return ids, labels, torch.arange(length).expand(n, length).clone()


def _per_row_gradients(model, layers, ids, labels, pos, n):
    """Autograd weight gradients of each candidate's mean loss and of the proxy rows' mean token loss."""
    weights = [lay.weight for lay in layers]
    grads = []
    for i in range(n + 1):
        sums, counts = row_mean_losses(model, ids, labels, pos)
        loss = sums[i] / counts[i] if i < n else sums[n:].sum() / counts[n:].sum()
        grads.append(torch.autograd.grad(loss, weights, allow_unused=True))
    return [[torch.zeros_like(w) if g is None else g for g, w in zip(row, weights)] for row in grads]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_fused_expert_weights_are_scored_exactly(family):
    model = copy.deepcopy(build_family(family)).double()
    model.config._experts_implementation = "eager"  # grouped_mm has no float64 kernel; the scoring forward
    # recomputes the experts itself and checks it against whichever implementation runs
    layers = block_linear_layers(model)
    experts = [lay for lay in layers if lay.num_experts]
    assert {lay.name.rsplit(".", 1)[1] for lay in experts} == {"gate_up_proj", "down_proj"}
    scored = {id(lay.weight) for lay in layers}
    block_params = [p for block in model.model.layers for p in block.parameters() if p.ndim >= 2]
    # every block matrix but the router is scored
    unscored = [p for p in block_params if id(p) not in scored]
    assert sum(p.numel() for p in unscored) <= sum(p.numel() for p in block_params) // 10
    # AdamW with a state: elementwise preconditioner, sliced per expert
    opt = torch.optim.AdamW([lay.weight for lay in layers], lr=0.01)
    for lay in layers:
        lay.weight.grad = torch.randn_like(lay.weight)
    opt.step()
    model.zero_grad()
    n = 4
    ids, labels, pos = _rows(n + 2, seed=3)
    per_row = _per_row_gradients(model, layers, ids, labels, pos, n)
    for kind, optimizer in (("sgd", torch.optim.SGD([lay.weight for lay in layers], lr=1.0)), ("adamw", opt)):
        pre = build_preconditioners(optimizer, layers, kind)
        align = torch.zeros(n, dtype=torch.float64)
        gram = torch.zeros(n, n, dtype=torch.float64)
        for j, lay in enumerate(layers):
            p = pre[lay.name]
            scale = p.dense if p.dense is not None else torch.tensor(p.scale, dtype=torch.float64)  # oriented
            u = torch.stack([lay.oriented(per_row[i][j]) * scale for i in range(n)]).flatten(1)
            target = lay.oriented(per_row[n][j]).flatten()
            w_align, w_gram = layer_weights(lay)
            align += w_align * (u @ target)
            gram += w_gram * (u @ u.t())
        grads = layer_gradients(model, layers, ids, labels, pos, n)
        stats = candidate_statistics(grads, layers, pre, n)
        torch.testing.assert_close(stats.alignment, align, rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(stats.gram, gram, rtol=1e-7, atol=1e-12)
        hooked = scored_statistics(model, layers, ids, labels, pos, n, pre)
        torch.testing.assert_close(hooked.alignment, align, rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(hooked.gram, gram, rtol=1e-7, atol=1e-12)

    # one sketch covers each 3-D weight: the sum of its experts' row-block sketches is the weight's sketch
    pre = build_preconditioners(torch.optim.SGD([lay.weight for lay in layers], lr=1.0), layers, "sgd")
    sketches = {lay.name: TensorCountSketch(*lay.sketch_shape, 64, seed=i) for i, lay in enumerate(experts)}
    grads = layer_gradients(model, layers, ids, labels, pos, n)
    sketched = candidate_statistics(grads, experts, pre, n, sketches, exact_elements=0)
    align = torch.zeros(n, dtype=torch.float64)
    for lay in experts:
        j = layers.index(lay)
        sk = sketches[lay.name]

        def flat(g, lay=lay):
            return lay.oriented(g).reshape(lay.num_experts * lay.d_out, lay.d_in)

        feats = torch.stack([sk.sketch_dense(flat(per_row[i][j])) for i in range(n)])
        align += layer_weights(lay)[0] * (feats @ sk.sketch_dense(flat(per_row[n][j])))
    torch.testing.assert_close(sketched.alignment, align, rtol=1e-7, atol=1e-12)


def test_unreadable_expert_layout_is_refused():
    model = copy.deepcopy(build_family("qwen3_moe"))
    del model.model.layers[1].mlp.experts.is_transposed  # fused weights without the layout (like Llama 4's)
    with pytest.raises(ValueError, match=r"cannot read the expert layout of Qwen3MoeExperts \(qwen3_moe"):
        block_linear_layers(model)
    model = copy.deepcopy(build_family("mixtral"))
    experts = model.model.layers[0].mlp.experts
    forward = experts.forward
    # layout attributes present, but the forward computes something else (e.g. a post-expert scaling)
    experts.forward = lambda hidden, index, weights: 2.0 * forward(hidden, index, weights)
    layers = block_linear_layers(model)
    ids, labels, pos = _rows(3, seed=1)
    with pytest.raises(ValueError, match="cannot read the expert layout of MixtralExperts"):
        layer_gradients(model, layers, ids, labels, pos, 2)
