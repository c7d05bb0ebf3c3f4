"""OPUS alignment and redundancy statistics, the utility of each candidate: optimizer-shaped per-sample
updates scored against a proxy gradient (arXiv 2602.05400).

For a candidate ``z`` OPUS scores the update the optimizer would actually apply, ``u_z = P_t grad L(z)``, by
how much it lowers the loss of a fresh proxy mini-batch, minus its redundancy with the candidates already
picked::

    U_z = <u_z, g_proxy> - lambda * <u_z, sum_{j in B} u_j>

Here ``u_z`` is the first-order parameter change of one optimizer step on ``z`` alone (the learning rate and
the optimizer's bias factors are inside ``u_z``, so the paper's ``lr`` / ``lr^2`` factors are absorbed) and
``g_proxy`` the raw mean gradient of the proxy batch. Only the Linear layers inside the decoder blocks are
scored, and the fused 3-D expert weights of MoE models, one expert matrix at a time over the tokens routed to
it (:func:`~hf_select.opus.gradients.expert_forward`); layer ``l`` is weighted by ``1 / sqrt(numel(W_l))`` in
the alignment and ``1 / numel(W_l)`` in the Gram matrix, as the official code does (:func:`layer_weights`;
``gram_weight="sqrt_numel"`` for both).

Per-sample layer gradients come from ONE joint forward/backward of candidates and proxy rows that takes
gradients with respect to the block Linear *outputs* only (``torch.autograd.grad``: no weight gradients are
computed, no ``.grad`` is touched); the weight gradient of row ``i`` is ``sum_t gy[i, t]^T x[i, t]``.
:func:`scored_statistics` turns each layer's output gradient into its alignment / Gram contribution inside
that backward pass (a hook per layer, GhostSuite-style), so no layer's inputs or per-sample matrices outlive
it; :func:`layer_gradients` + :func:`candidate_statistics` is the same computation on stored tensors.
Inner products are exact, or between sketches (:mod:`hf_select.opus.sketch`) for layers too large for the
exact budget. Selection (:func:`select_candidates`): Boltzmann draws with redundancy (paper), greedy, or top-k.

Preconditioners (state frozen at the start of the step):

- ``sgd``: ``u = lr * g``.
- ``adamw``: ``u = lr (1 - b1) / (1 - b1^t) * g / (sqrt(v_hat) + eps)`` with ``v_hat = b2 v / (1 - b2^t)``: the
  exact first-order change of a torch Adam/AdamW step in the new gradient (``t`` = the step about to be
  taken). Identity (``lr * g``) before the first step.
- ``muon``: torch.optim.Muon keeps an EMA momentum ``B <- (1 - mu) g + mu B`` and steps by ``lr' NS(M)``
  with ``M = (1 - mu^2) g + mu^2 B_old`` (Nesterov) or ``(1 - mu) g + mu B_old``, ``NS`` its Newton-Schulz
  orthogonalisation and ``lr'`` the shape-adjusted learning rate. With ``M0 = mu^2 B_old`` (resp. ``mu B_old``),
  ``u = lr' (1 - mu^2) DNS(M0)[g]`` (resp. ``(1 - mu)``): the derivative of a singular-value map at ``M0``,
  from the SVD ``M0 = U S V^T`` (Daleckii-Krein; :class:`~hf_select.opus.preconditioners.SpectralDerivative`).
  ``muon_linearization`` picks the map: ``"newton_schulz"`` (default; the iterations torch runs, with its
  coefficients, steps and Frobenius normalisation) or ``"polar"`` (the polar factor ``U V^T`` they
  approximate). Inner products are taken in ``M0``'s singular basis (both candidates' and proxy factors are
  rotated by ``U``, ``V``), where they are the same. ``"one_step"`` is the official code's form, ``u = lr' c_g
  (a I + b A + c A^2) g`` with ``A = X X^T`` of the normalised momentum ``X``: not a derivative, kept for
  comparison. Identity (``lr' g``) while the momentum is zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .gradients import (
    ExpertRouting,
    LayerGradients,
    ScoredLayer,
    block_linear_layers,
    hooked_scoring_objective,
    layer_gradients,
    opus_row_window,
    row_mean_losses,
)
from .preconditioners import (
    PRECONDITIONERS,
    LayerPreconditioner,
    OptimizerStateError,
    build_preconditioners,
    resolve_preconditioner,
)
from .sampling import SELECTIONS, Selection, select_candidates

# The OPUS scoring API in one place: gradients, preconditioners and sampling are re-exported here.
__all__ = [
    "GRAM_WEIGHTS",
    "PRECONDITIONERS",
    "SELECTIONS",
    "CandidateStatistics",
    "LayerGradients",
    "LayerPreconditioner",
    "OptimizerStateError",
    "ScoredLayer",
    "Selection",
    "block_linear_layers",
    "build_preconditioners",
    "candidate_statistics",
    "layer_gradients",
    "layer_weights",
    "opus_row_window",
    "per_sample_updates",
    "resolve_preconditioner",
    "row_mean_losses",
    "scored_statistics",
    "select_candidates",
]

# ---------------------------------------------------------------------------------------- inner products


GRAM_WEIGHTS = ("numel", "sqrt_numel")


@dataclass
class CandidateStatistics:
    """``alignment[i] = <u_i, g_proxy>`` and ``gram[i, j] = <u_i, u_j>`` (layer-weighted sums)."""

    alignment: torch.Tensor
    gram: torch.Tensor
    per_layer_seconds: dict[str, float] = field(default_factory=dict)
    row_losses: torch.Tensor | None = (
        None  # mean token loss per row, when the statistics came from the backward
    )


def per_sample_updates(grads_or_u: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Dense per-row matrices ``sum_t g[i, t]^T x[i, t]``: ``[rows, d_out, d_in]``."""
    return torch.bmm(grads_or_u.transpose(1, 2), inputs)


def layer_weights(layer: ScoredLayer, gram_weight: str = "numel") -> tuple[float, float]:
    """Weights of layer ``l`` in the alignment and in the Gram matrix.

    The alignment is weighted ``1 / sqrt(numel(W_l))`` (paper, section 3). ``gram_weight="numel"`` (default)
    weights the Gram ``1 / numel(W_l)`` as the official code does: it is the Gram of the candidates' per-layer
    updates each scaled by ``1 / sqrt(numel)``, the same scaling the alignment gives them, so alignment and
    redundancy compare one update to the proxy and to another update on the same footing.
    ``"sqrt_numel"`` weights both ``1 / sqrt(numel)`` (a literal reading of the paper's text).
    """
    if gram_weight not in GRAM_WEIGHTS:
        raise ValueError(f"gram_weight must be one of {GRAM_WEIGHTS}, got {gram_weight!r}")
    numel = layer.d_out * layer.d_in  # one expert's matrix for fused expert weights
    return 1.0 / math.sqrt(numel), (1.0 / numel if gram_weight == "numel" else 1.0 / math.sqrt(numel))


EXACT_ELEMENTS = 2**24


def _dense_updates(gy, x, pre: LayerPreconditioner, start: int, stop: int) -> torch.Tensor:
    """Preconditioned dense per-sample updates of candidate rows ``start:stop``: ``[rows, d_out, d_in]``."""
    if pre.factored:
        g2, x2 = pre.transform_factors(gy[start:stop], x[start:stop])
        return per_sample_updates(g2, x2)
    return pre.apply(per_sample_updates(gy[start:stop], x[start:stop]), inplace=True)


def _features(
    d_out: int,
    d_in: int,
    x: torch.Tensor,
    gy: torch.Tensor,
    pre: LayerPreconditioner,
    n: int,
    sketch,
    chunk_size: int,
    rank_one_sketch: bool,
    exact_elements: int,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Candidates' update features ``[n, D]``, the proxy target ``[D]`` and whether they are exact (dense)."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, gy = x.to(dtype), gy.to(dtype)
    gy, x = pre.rotate(gy, x)  # Muon: inner products in the momentum's singular basis
    widen = None
    if pre.block is not None:  # sharded optimizer state (FSDP): this rank's rows (or columns) of every update
        dim, start, stop = pre.block
        if dim == 0:
            gy, widen = gy[..., start:stop], (0, 0, start, d_out - stop)
        else:
            x, widen = x[..., start:stop], (start, d_in - stop)
        if sketch is not None and rank_one_sketch:
            raise ValueError(
                "sketch_rank_one_adamw needs the whole AdamW second moment, but the optimizer state is sharded "
                "(FSDP); turn it off"
            )
    if sketch is not None and rank_one_sketch:
        pre = pre.rank_one()
    forms_dense = sketch is None or not pre.factored or getattr(sketch, "forms_dense", False)
    if sketch is None or (forms_dense and n * gy.shape[-1] * x.shape[-1] <= exact_elements):
        # one GEMM for the proxy's summed gradient and one batched GEMM for all candidates (exact mode keeps
        # the n x d_out x d_in features anyway, so chunking would only add a copy)
        target = (gy[n:].reshape(-1, gy.shape[-1]).t() @ x[n:].reshape(-1, x.shape[-1])).flatten()
        return _dense_updates(gy, x, pre, 0, n).flatten(1), target, True
    if widen is not None:
        # a sharded layer: the sketches of this rank's block, zero outside it (the sketch is linear, so the
        # ranks' parts sum to an unbiased estimate of the full inner products)
        proxy_g = F.pad(gy[n:], widen[2:]) if pre.block[0] == 0 else gy[n:]
        proxy_x = F.pad(x[n:], widen[:2]) if pre.block[0] == 1 else x[n:]
        proxy_g, proxy_x = proxy_g.reshape(1, -1, proxy_g.shape[-1]), proxy_x.reshape(1, -1, proxy_x.shape[-1])
        feats = torch.cat(
            [
                sketch.sketch_dense(F.pad(_dense_updates(gy, x, pre, s, min(n, s + chunk_size)), widen))
                for s in range(0, n, chunk_size)
            ]
        )
        return feats, sketch.sketch_outer(proxy_g, proxy_x)[0], False
    # the proxy rows' tokens form one outer-product sum: its sketch without the dense matrix
    proxy_g, proxy_x = gy[n:].reshape(1, -1, gy.shape[-1]), x[n:].reshape(1, -1, x.shape[-1])
    target = sketch.sketch_outer(proxy_g, proxy_x)[0]
    if pre.factored:
        feats = sketch.sketch_outer(*pre.transform_factors(gy[:n], x[:n]))
    else:
        feats = torch.cat(
            [
                sketch.sketch_dense(_dense_updates(gy, x, pre, s, min(n, s + chunk_size)))
                for s in range(0, n, chunk_size)
            ]
        )
    return feats, target, False


def layer_statistics(
    layer: ScoredLayer,
    x: torch.Tensor,
    gy: torch.Tensor,
    pre: LayerPreconditioner,
    num_candidates: int,
    sketch=None,
    chunk_size: int = 8,
    rank_one_sketch: bool = False,
    gram_weight: str = "numel",
    exact_elements: int = EXACT_ELEMENTS,
    routing: ExpertRouting | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's weighted contribution to the alignment ``[n]`` and the Gram matrix ``[n, n]``.

    ``x [rows, T, d_in]`` and ``gy [rows, T, d_out]`` hold the candidate rows first, then the proxy rows.

    Without a ``sketch`` the inner products are exact. With one, factored preconditioners (SGD, AdamW's
    first step, or AdamW under ``rank_one_sketch``) are sketched straight from the (gradient, input) factors;
    AdamW's elementwise and Muon's spectral preconditioners need the dense per-sample matrices, built
    ``chunk_size`` candidates at a time and dropped once sketched. Whenever the dense per-sample matrices are
    formed anyway (those preconditioners, or a sketch whose ``forms_dense`` is true) and
    ``n * d_out * d_in <= exact_elements``, the inner products are taken between the dense matrices instead of
    their sketches: exact, and cheaper than the scatter into the sketch (one ``n x n`` GEMM instead of
    ``n * d_out * d_in`` scattered adds). ``exact_elements=0`` always sketches.

    Fused expert weights (``routing``: ``x`` / ``gy`` are ``[S, d]`` over the (token, expert) pairs): expert
    ``e``'s per-sample gradient sums its routed tokens, and the layer's inner products sum over experts. The
    sketch covers the whole ``[E * d_out, d_in]`` weight: expert ``e`` is sketched with the rows
    ``e * d_out:(e + 1) * d_out`` of its tables (``sketch.row_block``), the sum over experts being the
    weight's sketch.
    """
    n = num_candidates
    w_align, w_gram = layer_weights(layer, gram_weight)
    options = (chunk_size, rank_one_sketch, exact_elements)
    if routing is None:
        feats, target, _ = _features(layer.d_out, layer.d_in, x, gy, pre, n, sketch, *options)
        return w_align * (feats @ target.to(feats.dtype)), w_gram * (feats @ feats.t())
    align = gram = None
    sketched: list[torch.Tensor | None] = [None, None]
    for e, count in enumerate(routing.counts):
        if not count:
            continue
        xe, ge = routing.expert_factors(x, e), routing.expert_factors(gy, e)
        block = None if sketch is None else sketch.row_block(e * layer.d_out, (e + 1) * layer.d_out)
        feats, target, exact = _features(layer.d_out, layer.d_in, xe, ge, pre.expert(e), n, block, *options)
        if exact:
            a, g = feats @ target.to(feats.dtype), feats @ feats.t()
            align, gram = (a, g) if align is None else (align + a, gram + g)
        else:
            sketched = [feats, target] if sketched[0] is None else [sketched[0] + feats, sketched[1] + target]
    if sketched[0] is not None:
        a, g = sketched[0] @ sketched[1].to(sketched[0].dtype), sketched[0] @ sketched[0].t()
        align, gram = (a, g) if align is None else (align + a, gram + g)
    if align is None:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        align = torch.zeros(n, dtype=dtype, device=x.device)
        gram = torch.zeros(n, n, dtype=dtype, device=x.device)
    return w_align * align, w_gram * gram


def _statistics_of(num_candidates, sketches, chunk_size, rank_one_sketch, gram_weight, exact_elements):
    """:func:`layer_statistics` with the settings shared by every layer of one scoring pass bound:
    ``(layer, x, gy, pre, routing) -> (alignment, gram)``."""

    def statistics(layer, x, gy, pre, routing):
        return layer_statistics(layer, x, gy, pre, num_candidates, (sketches or {}).get(layer.name), chunk_size,
                                rank_one_sketch, gram_weight, exact_elements, routing)  # fmt: skip

    return statistics


def candidate_statistics(
    grads: LayerGradients,
    layers: list[ScoredLayer],
    preconditioners: dict[str, LayerPreconditioner | None],
    num_candidates: int,
    sketches: dict | None = None,
    chunk_size: int = 8,
    rank_one_sketch: bool = False,
    gram_weight: str = "numel",
    exact_elements: int = EXACT_ELEMENTS,
) -> CandidateStatistics:
    """Alignment with the proxy gradient and Gram matrix of the candidates' preconditioned updates.

    From the stored layer inputs and output gradients of :func:`layer_gradients` (see :func:`layer_statistics`;
    ``sketches`` maps layer names to sketches, a missing entry means exact). :func:`scored_statistics` gives
    the same numbers from inside the backward pass without keeping the layer tensors.
    """
    statistics = _statistics_of(num_candidates, sketches, chunk_size, rank_one_sketch, gram_weight, exact_elements)
    alignment = gram = None
    for layer in layers:
        pre = preconditioners.get(layer.name)
        if pre is None:
            continue
        a, g = statistics(
            layer, grads.inputs[layer.name], grads.output_grads[layer.name], pre, grads.routing.get(layer.name)
        )
        alignment = a if alignment is None else alignment + a
        gram = g if gram is None else gram + g
    return CandidateStatistics(alignment.double(), gram.double(), row_losses=grads.row_losses)


def scored_statistics(
    model: nn.Module,
    layers: list[ScoredLayer],
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor,
    num_candidates: int,
    preconditioners: dict[str, LayerPreconditioner | None],
    sketches: dict | None = None,
    chunk_size: int = 8,
    rank_one_sketch: bool = False,
    gram_weight: str = "numel",
    exact_elements: int = EXACT_ELEMENTS,
    clock=None,
) -> CandidateStatistics:
    """:func:`candidate_statistics` computed inside the scoring backward pass (as GhostSuite does).

    The same joint forward/backward as :func:`layer_gradients`, but each block Linear's contribution is taken
    by a hook on its output as soon as the output gradient arrives; the layer's input is released right after,
    and no per-sample matrix outlives its chunk. ``per_layer_seconds["sketch_and_inner_products"]`` holds the
    time spent in the hooks (measured with ``clock``, default ``time.perf_counter``).
    """
    import time

    clock = clock or time.perf_counter
    statistics = _statistics_of(num_candidates, sketches, chunk_size, rank_one_sketch, gram_weight, exact_elements)
    state = {"alignment": None, "gram": None, "seconds": 0.0}
    inputs: dict[str, torch.Tensor] = {}
    outputs: list[torch.Tensor] = []

    def on_grad(layer, pre, routing):
        def fn(grad):
            t0 = clock()
            a, g = statistics(layer, inputs.pop(layer.name), grad, pre, routing)
            state["alignment"] = a if state["alignment"] is None else state["alignment"] + a
            state["gram"] = g if state["gram"] is None else state["gram"] + g
            state["seconds"] += clock() - t0

        return fn

    def forward_hook(layer):
        def fn(_module, args, output, routing=None):
            pre = preconditioners.get(layer.name)
            if pre is None or not output.requires_grad:
                return
            inputs[layer.name] = args[0].detach()
            output.register_hook(on_grad(layer, pre, routing))
            outputs.append(output)

        return fn

    try:
        with hooked_scoring_objective(
            model, layers, forward_hook, input_ids, labels, position_ids, num_candidates
        ) as (objective, row_losses):
            if not outputs:
                raise OptimizerStateError("the optimizer holds none of the scored block Linear weights")
            # gradients w.r.t. the layer outputs only: no weight gradient, no .grad touched; the returned
            # tensors are dropped at once (the hooks already consumed them)
            torch.autograd.grad(objective, outputs, allow_unused=True)
    finally:
        inputs.clear()
    if state["alignment"] is None:  # no layer received a gradient (the loss does not depend on any)
        state["alignment"] = torch.zeros(num_candidates)
        state["gram"] = torch.zeros(num_candidates, num_candidates)
    return CandidateStatistics(
        state["alignment"].double(),
        state["gram"].double(),
        {"sketch_and_inner_products": state["seconds"]},
        row_losses,
    )
