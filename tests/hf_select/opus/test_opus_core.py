import copy

import pytest
import torch

from hf_select.opus.alignment import (
    OptimizerStateError,
    block_linear_layers,
    build_preconditioners,
    candidate_statistics,
    layer_gradients,
    per_sample_updates,
    resolve_preconditioner,
    row_mean_losses,
    select_candidates,
)
from hf_select.opus.sketch import FactoredCountSketch, split_sketch_dim
from hf_select.testing import tiny_model


def _rows(n, length=12, seed=0, vocab=300):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (n, length), generator=gen)
    labels = ids.clone()
    labels[:, 0] = -100
    pos = torch.arange(length).expand(n, length).clone()
    return ids, labels, pos


# ------------------------------------------------------------------------------------------------ sketch


def test_sketch_outer_matches_dense_sketch_and_is_linear():
    sk = FactoredCountSketch(24, 40, 64, seed=3)
    g, x = torch.randn(3, 7, 24), torch.randn(3, 7, 40)
    dense = torch.einsum("bto,bti->boi", g, x)
    assert torch.allclose(sk.sketch_outer(g, x), sk.sketch_dense(dense), atol=1e-4)
    assert sk.row_bucket.numel() + sk.col_bucket.numel() == 24 + 40  # O(d_out + d_in) tables
    assert sk.dim <= 64 and split_sketch_dim(8192, 10, 10) == (10, 10)


def test_sketch_preserves_inner_products_statistically():
    torch.manual_seed(0)
    a = torch.randn(64, 96)
    b = 0.6 * a + 0.8 * torch.randn(64, 96)
    exact = float((a * b).sum())
    estimates = []
    for seed in range(200):
        sk = FactoredCountSketch(64, 96, 512, seed=seed)
        estimates.append(float(sk.sketch_dense(a) @ sk.sketch_dense(b)))
    estimates = torch.tensor(estimates)
    stderr = float(estimates.std()) / len(estimates) ** 0.5
    assert abs(float(estimates.mean()) - exact) < 4 * stderr + 1e-3 * abs(exact)  # unbiased
    # a single sketch is accurate to a few percent of |a||b|
    assert float((estimates - exact).abs().median()) < 0.1 * float(a.norm() * b.norm())


# ---------------------------------------------------------------------------------------- gradients


def test_per_sample_layer_gradients_equal_autograd_weight_gradients_without_touching_grad():
    model = tiny_model("llama").float()
    layers = block_linear_layers(model)
    assert {"layers.0.self_attn.q_proj", "layers.1.mlp.down_proj"} <= {lay.name for lay in layers}
    ids, labels, pos = _rows(3)
    grads = layer_gradients(model, layers, ids, labels, pos, num_candidates=2)
    assert all(p.grad is None for p in model.parameters())
    # candidate 1 alone: gradient of its mean loss
    sums, counts = row_mean_losses(model, ids[1:2], labels[1:2], pos[1:2])
    (sums / counts).sum().backward()
    for layer in layers[:4]:
        mine = per_sample_updates(grads.output_grads[layer.name][1:2], grads.inputs[layer.name][1:2])[0]
        assert torch.allclose(mine, layer.weight.grad, atol=1e-5), layer.name


def test_gpt2_conv1d_layers_are_scored_in_weight_orientation():
    model = tiny_model("gpt2")
    layers = block_linear_layers(model)
    assert any(lay.transposed for lay in layers)
    ids, labels, pos = _rows(2)
    grads = layer_gradients(model, layers, ids, labels, pos, num_candidates=1)
    sums, counts = row_mean_losses(model, ids[:1], labels[:1], pos[:1])
    (sums / counts).sum().backward()
    layer = next(lay for lay in layers if lay.transposed)
    mine = per_sample_updates(grads.output_grads[layer.name][:1], grads.inputs[layer.name][:1])[0]
    assert torch.allclose(layer.oriented(mine), layer.weight.grad, atol=1e-5)


def test_adamw_preconditioned_direction_equals_first_order_adamw_step():
    torch.manual_seed(0)
    model = tiny_model("llama").double()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for _ in range(3):  # build up a non-trivial state
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 0.1
        opt.step()
    opt.zero_grad(set_to_none=True)
    layers = block_linear_layers(model)
    ids, labels, pos = _rows(2, seed=1)
    grads = layer_gradients(model, layers, ids, labels, pos, num_candidates=1)
    pre = build_preconditioners(opt, layers, resolve_preconditioner(opt))
    # actual AdamW steps from the same state: with s * g and with 0; the difference / s is the linear part
    sums, counts = row_mean_losses(model, ids[:1], labels[:1], pos[:1])
    sample_grads = torch.autograd.grad((sums / counts).sum(), list(model.parameters()))
    s = 1e-5
    deltas = []
    for scale in (s, 0.0):
        m, o = (
            copy.deepcopy(model),
            torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1),
        )
        o = copy.deepcopy(opt)
        o.param_groups[0]["params"] = list(m.parameters())
        o.state = {mp: copy.deepcopy(opt.state[p]) for mp, p in zip(m.parameters(), model.parameters())}
        for mp, g in zip(m.parameters(), sample_grads):
            mp.grad = g * scale
        o.step()
        deltas.append(
            {n: mp.detach() - p.detach() for (n, mp), p in zip(m.named_parameters(), model.parameters())}
        )
    names = dict(model.named_parameters())
    for layer in layers[:5]:
        pname = next(n for n, p in names.items() if p is layer.weight)
        step_linear = -(deltas[0][pname] - deltas[1][pname]) / s
        u = pre[layer.name].apply(
            per_sample_updates(grads.output_grads[layer.name][:1], grads.inputs[layer.name][:1])
        )[0]
        assert torch.allclose(u, step_linear, rtol=1e-3, atol=1e-9 * float(u.abs().max()) + 1e-12), layer.name


def test_identity_before_first_step_and_clear_errors_for_missing_state():
    model = tiny_model("llama")
    layers = block_linear_layers(model)
    fresh = torch.optim.AdamW(model.parameters(), lr=0.5)
    pre = build_preconditioners(fresh, layers, "adamw")
    assert pre[layers[0].name].factored and pre[layers[0].name].scale == 0.5
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    sgd.step()
    with pytest.raises(OptimizerStateError, match="exp_avg_sq"):
        build_preconditioners(sgd, layers, "adamw")

    class EightBitAdam(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"lr": 1e-3})

    with pytest.raises(OptimizerStateError, match="cannot infer"):
        resolve_preconditioner(EightBitAdam(model.parameters()))
    with pytest.raises(ValueError, match="preconditioner must be"):
        resolve_preconditioner(sgd, "lion")


def test_muon_preconditioner_is_blind_to_the_momentum_direction():
    model = tiny_model("llama")
    layers = block_linear_layers(model)
    muon = torch.optim.Muon([lay.weight for lay in layers], lr=0.02)
    assert resolve_preconditioner(muon) == "muon"
    assert build_preconditioners(muon, layers, "muon")[layers[0].name].factored  # no state yet: identity
    for lay in layers:
        lay.weight.grad = torch.randn_like(lay.weight)
    muon.step()
    for linearization in ("newton_schulz", "polar"):
        pre = build_preconditioners(muon, layers, "muon", muon_linearization=linearization)[layers[0].name]
        buf = muon.state[layers[0].weight]["momentum_buffer"]
        g = torch.randn_like(buf)
        u, v = pre.basis
        # Newton-Schulz normalises its input, so adding more of the momentum itself changes nothing
        along = pre.unrotate(pre.apply((u.t() @ buf @ v)[None]))[0]
        across = pre.unrotate(pre.apply((u.t() @ g @ v)[None]))[0]
        assert float(along.norm()) < 1e-4 * float(across.norm())
    with pytest.raises(ValueError, match="muon_linearization"):
        build_preconditioners(muon, layers, "muon", muon_linearization="frozen")


# --------------------------------------------------------------------------------------------- utility


def _stats(model, ids, labels, pos, n, sketch_dim=None, optimizer=None):
    layers = block_linear_layers(model)
    opt = optimizer or torch.optim.SGD(model.parameters(), lr=1.0)
    pre = build_preconditioners(opt, layers, resolve_preconditioner(opt))
    sketches = (
        {
            lay.name: FactoredCountSketch(lay.d_out, lay.d_in, sketch_dim, seed=i)
            for i, lay in enumerate(layers)
        }
        if sketch_dim
        else None
    )
    grads = layer_gradients(model, layers, ids, labels, pos, n)
    return candidate_statistics(grads, layers, pre, n, sketches)


def test_candidate_identical_to_proxy_gets_top_utility():
    model = tiny_model("llama")
    ids, labels, pos = _rows(6, seed=2)
    proxy = ids[3:4]
    joint = torch.cat([ids, proxy]), torch.cat([labels, labels[3:4]]), torch.cat([pos, pos[3:4]])
    for sketch_dim in (None, 4096):
        stats = _stats(model, *joint, n=6, sketch_dim=sketch_dim)
        assert int(stats.alignment.argmax()) == 3
        sel = select_candidates(stats.alignment, stats.gram, 1, greedy=True)
        assert sel.indices == [3]


def test_redundancy_lowers_the_utility_of_a_duplicate():
    model = tiny_model("llama")
    ids, labels, pos = _rows(5, seed=4)
    ids[1], labels[1] = ids[0], labels[0]  # candidate 1 duplicates candidate 0
    proxy = _rows(2, seed=9)
    joint = [torch.cat([a, b]) for a, b in zip((ids, labels, pos), proxy)]
    stats = _stats(model, *joint, n=5)
    a, g = stats.alignment, stats.gram
    assert torch.allclose(a[0], a[1]) and torch.allclose(g[0, 0], g[0, 1])
    # the spec's rule (U_z = z_z - lambda * gram[z, 0] / mean|u|^2 once 0 is picked) puts the duplicate's switch
    # point at lambda*; the library's second greedy pick must flip exactly there
    top = a.double().clone()
    top[0] = top[1] = top.max() + 1
    z = (top - top.mean()) / top.std()
    cost = g[:, 0].double() / g.diagonal().double().mean()
    switch = min(float((z[1] - z[j]) / (cost[1] - cost[j])) for j in range(2, 5) if cost[1] > cost[j])
    assert select_candidates(top, g, 2, greedy=True, redundancy_weight=0.95 * switch).indices == [0, 1]
    assert select_candidates(top, g, 2, greedy=True, redundancy_weight=1.05 * switch).indices[1] != 1
    # with a strong redundancy weight the duplicate is never the second greedy pick after its twin
    forced_a = a.clone()
    forced_a[0] = forced_a[1] = a.max() + 1
    sel = select_candidates(forced_a, g, 2, greedy=True, redundancy_weight=10.0)
    assert sel.indices[0] in (0, 1) and sel.indices[1] not in (0, 1)
    sel = select_candidates(forced_a, g, 2, greedy=True, redundancy_weight=0.0)
    assert sorted(sel.indices) == [0, 1]


def test_temperature_to_zero_equals_greedy_and_sampling_is_seeded():
    torch.manual_seed(1)
    a = torch.randn(16)
    feats = torch.randn(16, 5)
    g = feats @ feats.t()
    greedy = select_candidates(a, g, 8, greedy=True).indices
    cold = select_candidates(a, g, 8, temperature=1e-6, generator=torch.Generator().manual_seed(0)).indices
    assert cold == greedy
    s1 = select_candidates(a, g, 8, generator=torch.Generator().manual_seed(5))
    s2 = select_candidates(a, g, 8, generator=torch.Generator().manual_seed(5))
    assert s1.indices == s2.indices and len(set(s1.indices)) == 8
    assert 1.0 < s1.effective_sample_size < 16.0
    raw = select_candidates(
        a * 1e-3, g * 1e-6, 8, standardize=False, generator=torch.Generator().manual_seed(0)
    )
    assert raw.effective_sample_size > 15.9  # the paper's raw scale is near-uniform at tau = 0.9


def test_selection_rejects_bad_arguments():
    a, g = torch.zeros(4), torch.eye(4)
    with pytest.raises(ValueError, match="select 5 of 4"):
        select_candidates(a, g, 5)
    with pytest.raises(ValueError, match="temperature"):
        select_candidates(a, g, 2, temperature=0.0)


def test_stateless_optimizer_after_steps_is_refused_for_adamw():
    model = tiny_model("llama")
    layers = block_linear_layers(model)
    plain_sgd = torch.optim.SGD(model.parameters(), lr=0.1)  # keeps no state at all
    with pytest.raises(OptimizerStateError, match="8-bit"):
        build_preconditioners(plain_sgd, layers, "adamw", steps_taken=3)


def test_rank_one_preconditioner_is_exact_for_rank_one_and_sketchable():
    from hf_select.opus.alignment import LayerPreconditioner

    r, c = torch.rand(6) + 0.5, torch.rand(5) + 0.5
    pre = LayerPreconditioner(dense=torch.outer(r, c))
    g, x = torch.randn(3, 4, 6), torch.randn(3, 4, 5)
    dense = pre.apply(per_sample_updates(g, x))
    approx = pre.rank_one()
    assert approx.factored
    assert torch.allclose(approx.apply(per_sample_updates(g, x)), dense, atol=1e-5)
    g2, x2 = approx.transform_factors(g, x)
    assert torch.allclose(per_sample_updates(g2, x2), dense, atol=1e-5)


# ------------------------------------------------------------------------- proxy draws, hooked statistics


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_preconditioner_is_the_linear_part_of_a_torch_sgd_step_with_dampening(nesterov):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    # torch refuses Nesterov with dampening: dampening is exercised in the non-Nesterov case
    kw = dict(lr=0.1, momentum=0.9, dampening=0.0 if nesterov else 0.5, nesterov=nesterov, weight_decay=0.01)
    opt = torch.optim.SGD([w], **kw)
    from hf_select.opus.alignment import ScoredLayer

    lay = ScoredLayer("w", torch.nn.Identity(), w, False)
    g = torch.randn(4, 3, dtype=torch.float64)

    def linear_part():
        deltas = []
        for scale in (1e-3, 0.0):
            o = copy.deepcopy(opt)
            p = o.param_groups[0]["params"][0]
            p.grad = g * scale
            before = p.detach().clone()
            o.step()
            deltas.append(before - p.detach())
        return (deltas[0] - deltas[1]) / 1e-3

    for _ in range(2):  # fresh state (buffer = g, no dampening), then with a momentum buffer
        expected = linear_part()
        scale = build_preconditioners(opt, [lay], "sgd")["w"].scale
        assert torch.allclose(scale * g, expected, rtol=1e-6), (nesterov, scale)
        w.grad = torch.randn_like(w)
        opt.step()


def test_sgd_dampening_changes_the_scale_after_the_first_step():
    w = torch.nn.Parameter(torch.randn(2, 2))
    from hf_select.opus.alignment import ScoredLayer

    lay = ScoredLayer("w", torch.nn.Identity(), w, False)
    opt = torch.optim.SGD([w], lr=1.0, momentum=0.9, dampening=0.75)
    w.grad = torch.ones_like(w)
    opt.step()
    assert build_preconditioners(opt, [lay], "sgd")["w"].scale == pytest.approx(0.25)


def test_gram_is_weighted_one_over_numel_and_alignment_one_over_sqrt_numel():
    model = tiny_model("llama").double()
    layers = block_linear_layers(model)
    ids, labels, pos = _rows(4, seed=3)
    n = 3
    grads = layer_gradients(model, layers, ids, labels, pos, n)
    pre = build_preconditioners(torch.optim.SGD(model.parameters(), lr=1.0), layers, "sgd")
    align = torch.zeros(n, dtype=torch.float64)
    gram = torch.zeros(n, n, dtype=torch.float64)
    for lay in layers:  # by hand from the dense per-sample matrices
        u = per_sample_updates(grads.output_grads[lay.name], grads.inputs[lay.name])
        feats, proxy = u[:n].flatten(1), u[n:].sum(0).flatten()
        align += feats @ proxy / lay.weight.numel() ** 0.5
        gram += feats @ feats.t() / lay.weight.numel()
    stats = candidate_statistics(grads, layers, pre, n)
    assert torch.allclose(stats.alignment, align) and torch.allclose(stats.gram, gram)
    old = candidate_statistics(grads, layers, pre, n, gram_weight="sqrt_numel")
    assert torch.allclose(old.alignment, align) and not torch.allclose(old.gram, gram)
    with pytest.raises(ValueError, match="gram_weight"):
        candidate_statistics(grads, layers, pre, n, gram_weight="numel2")


@pytest.mark.parametrize("kind", ["tensor", "factored", None])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_in_backward_statistics_equal_the_dense_sketch(kind, optimizer):
    """The hooks' sketches (no per-sample matrix kept) equal the sketch of the dense per-sample updates."""
    from hf_select.opus.alignment import scored_statistics
    from hf_select.opus.sketch import make_sketch

    torch.manual_seed(0)
    model = tiny_model("llama").double()
    layers = block_linear_layers(model)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
        opt.zero_grad(set_to_none=True)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
    pre = build_preconditioners(opt, layers, optimizer)
    sketches = (
        {lay.name: make_sketch(kind, lay.d_out, lay.d_in, 256, seed=i) for i, lay in enumerate(layers)}
        if kind
        else None
    )
    ids, labels, pos = _rows(6, seed=7)
    n = 4
    grads = layer_gradients(model, layers, ids, labels, pos, n)
    # independent reference: dense per-sample updates, preconditioned, then each sketched with sketch_dense
    align = torch.zeros(n, dtype=torch.float64)
    gram = torch.zeros(n, n, dtype=torch.float64)
    for lay in layers:
        u = per_sample_updates(grads.output_grads[lay.name], grads.inputs[lay.name])
        cand, proxy = pre[lay.name].apply(u[:n]), u[n:].sum(0)
        if sketches:
            cand, proxy = sketches[lay.name].sketch_dense(cand), sketches[lay.name].sketch_dense(proxy)
        cand, proxy = cand.flatten(1), proxy.flatten()
        align += cand @ proxy / lay.weight.numel() ** 0.5
        gram += cand @ cand.t() / lay.weight.numel()
    stats = scored_statistics(model, layers, ids, labels, pos, n, pre, sketches, exact_elements=0)
    scale_a, scale_g = float(align.abs().max()), float(gram.abs().max())
    assert float((stats.alignment - align).abs().max()) <= 1e-5 * scale_a
    assert float((stats.gram - gram).abs().max()) <= 1e-5 * scale_g
    assert torch.allclose(stats.row_losses, grads.row_losses)
    assert all(p.grad is None for p in model.parameters())
    # the post-hoc path agrees with the hooks
    post = candidate_statistics(grads, layers, pre, n, sketches, exact_elements=0)
    assert torch.allclose(post.alignment, stats.alignment, rtol=1e-9) and torch.allclose(
        post.gram, stats.gram
    )


def test_dense_per_sample_updates_give_exact_inner_products_under_the_budget():
    """When the elementwise AdamW preconditioner forms the dense updates anyway, small layers skip the sketch."""
    from hf_select.opus.alignment import scored_statistics
    from hf_select.opus.sketch import make_sketch

    torch.manual_seed(0)
    model = tiny_model("llama").double()
    layers = block_linear_layers(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    pre = build_preconditioners(opt, layers, "adamw")
    ids, labels, pos = _rows(6, seed=7)
    sketches = {
        lay.name: make_sketch("tensor", lay.d_out, lay.d_in, 64, seed=i) for i, lay in enumerate(layers)
    }
    exact = scored_statistics(model, layers, ids, labels, pos, 4, pre, None)
    budget = scored_statistics(model, layers, ids, labels, pos, 4, pre, sketches)
    sketched = scored_statistics(model, layers, ids, labels, pos, 4, pre, sketches, exact_elements=0)
    assert torch.allclose(budget.gram, exact.gram, rtol=1e-9) and torch.allclose(
        budget.alignment, exact.alignment
    )
    assert not torch.allclose(sketched.gram, exact.gram, rtol=1e-3)


def test_topk_selection_takes_the_largest_alignments_without_sampling():
    a = torch.tensor([0.1, 3.0, -1.0, 2.0, 2.0, 0.5])
    g = torch.ones(6, 6) * 100  # a huge redundancy term is ignored by top-k
    sel = select_candidates(a, g, 3, selection="topk", generator=torch.Generator().manual_seed(0))
    assert sel.indices == [1, 3, 4]  # ties broken by position
    assert select_candidates(a, g, 3, selection="topk", temperature=0.0).indices == [1, 3, 4]
    with pytest.raises(ValueError, match="selection must be"):
        select_candidates(a, g, 3, selection="softmax")
