"""OPUS utilities: optimizer-shaped per-sample updates scored against a proxy gradient (arXiv 2602.05400).

For a candidate ``z`` OPUS scores the update the optimizer would actually apply, ``u_z = P_t grad L(z)``, by
how much it lowers the loss of a fresh proxy mini-batch, minus its redundancy with the candidates already
picked::

    U_z = <u_z, g_proxy> - lambda * <u_z, sum_{j in B} u_j>

Here ``u_z`` is the first-order parameter change of one optimizer step on ``z`` alone (the learning rate and
the optimizer's bias factors are inside ``u_z``, so the paper's ``lr`` / ``lr^2`` factors are absorbed) and
``g_proxy`` the raw mean gradient of the proxy batch. Only the Linear layers inside the decoder blocks are
scored; layer ``l`` is weighted by ``1 / sqrt(numel(W_l))`` in the alignment and ``1 / numel(W_l)`` in the
Gram matrix, as the official code does (:func:`layer_weights`; ``gram_weight="sqrt_numel"`` for both).

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
- ``muon``: torch.optim.Muon applies ``NS(B~)`` with ``B~ = (1 + mu) g + mu^2 B`` (Nesterov) or ``g + mu B``.
  We linearise around the momentum ``M0 = mu^2 B`` (resp. ``mu B``) by freezing the orthogonalising factor of
  ``M0``: ``u = lr' (1 + mu) (M0 M0^T + floor)^(-1/2) g`` (or the right factor when the matrix is tall),
  with singular values floored at ``||M0||_F / a^k`` (below it Newton-Schulz is linear with slope ``a^k``).
  Identity (``lr' g``) while the momentum is zero. ``lr'`` is Muon's shape-adjusted learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..model_adapter import get_model_adapter, unwrap_model
from ..token_loss import IGNORE_INDEX, final_hidden_states, logits_to_losses, prediction_mask, split_causal_lm

PRECONDITIONERS = ("auto", "sgd", "adamw", "muon")


class OptimizerStateError(ValueError):
    """The optimizer does not keep the state that the requested OPUS preconditioner reads."""


# ----------------------------------------------------------------------------------------------- layers


@dataclass
class ScoredLayer:
    """A Linear-like layer inside a decoder block, seen as ``y = x W^T`` with ``W`` of shape ``[d_out, d_in]``."""

    name: str
    module: nn.Module
    weight: nn.Parameter
    transposed: bool  # GPT-2 Conv1D stores W^T

    @property
    def d_out(self) -> int:
        return self.weight.shape[0] if not self.transposed else self.weight.shape[1]

    @property
    def d_in(self) -> int:
        return self.weight.shape[1] if not self.transposed else self.weight.shape[0]

    def oriented(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor shaped like the weight, in ``[d_out, d_in]`` orientation."""
        return tensor.t() if self.transposed else tensor


def block_linear_layers(model: nn.Module, trainable_only: bool = True) -> list[ScoredLayer]:
    """The Linear (and GPT-2 Conv1D) layers inside the decoder blocks of ``model``."""
    adapter = get_model_adapter(model)
    layers = []
    for index, block in enumerate(adapter.layers):
        for name, module in block.named_modules():
            weight = getattr(module, "weight", None)
            if weight is None or weight.ndim != 2 or (trainable_only and not weight.requires_grad):
                continue
            if isinstance(module, nn.Linear):
                layers.append(ScoredLayer(f"layers.{index}.{name}", module, weight, False))
            elif type(module).__name__ == "Conv1D":
                layers.append(ScoredLayer(f"layers.{index}.{name}", module, weight, True))
    if not layers:
        raise ValueError(f"{type(model).__name__} has no trainable Linear layer inside its decoder blocks")
    return layers


# ------------------------------------------------------------------------------------- layer gradients


@dataclass
class LayerGradients:
    """Inputs ``x [rows, T, d_in]`` and output gradients ``gy [rows, T, d_out]`` of every scored layer."""

    inputs: dict[str, torch.Tensor]
    output_grads: dict[str, torch.Tensor]
    row_losses: torch.Tensor  # mean token loss per row (no grad)


def row_mean_losses(
    model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of token losses and number of predicted tokens per row (differentiable), for packed/windowed rows."""
    mask = prediction_mask(input_ids, None, position_ids, labels)
    _, head, softcap = split_causal_lm(model)
    hidden = final_hidden_states(model, input_ids=input_ids, attention_mask=None, position_ids=position_ids)
    rows, cols = mask.nonzero(as_tuple=True)
    token_losses = logits_to_losses(hidden[rows, cols - 1], labels[rows, cols], head, softcap)
    sums = torch.zeros(input_ids.shape[0], dtype=token_losses.dtype, device=input_ids.device)
    sums = sums.index_add(0, rows, token_losses)
    return sums, mask.sum(-1)


def layer_gradients(
    model: nn.Module,
    layers: list[ScoredLayer],
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor,
    num_candidates: int,
) -> LayerGradients:
    """One forward/backward over candidate rows (first ``num_candidates``) and proxy rows (the rest).

    The objective is ``sum_i mean_loss(candidate i) + mean token loss of the proxy rows``, so row ``i``'s
    output gradients are those of its own mean loss and the proxy rows' sum to the proxy mean gradient.
    Gradients are taken w.r.t. the layer outputs only. Call it in eval mode (no dropout, no checkpointing).
    """
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name):
        def fn(_module, args, output):
            captured[name] = (args[0].detach(), output)

        return fn

    handles = [layer.module.register_forward_hook(hook(layer.name)) for layer in layers]
    try:
        with torch.enable_grad():
            sums, counts = row_mean_losses(model, input_ids, labels, position_ids)
            objective, row_losses = _scoring_objective(sums, counts, num_candidates)
            missing = [layer.name for layer in layers if layer.name not in captured]
            if missing:
                raise RuntimeError(f"layers not reached by the forward pass: {missing[:3]}")
            outputs = [captured[layer.name][1] for layer in layers]
            grads = torch.autograd.grad(objective, outputs, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    inputs, output_grads = {}, {}
    for layer, grad in zip(layers, grads):
        x = captured[layer.name][0]
        inputs[layer.name] = x
        output_grads[layer.name] = (
            torch.zeros(*x.shape[:-1], layer.d_out, dtype=x.dtype, device=x.device) if grad is None else grad
        )
    return LayerGradients(inputs, output_grads, row_losses)


# ---------------------------------------------------------------------------------------- preconditioner


@dataclass
class LayerPreconditioner:
    """``u = scale * L @ G @ R`` (factored; ``L``/``R`` optional matrices, or vectors for diagonal ones) or
    ``u = dense * G`` (elementwise)."""

    scale: float = 1.0
    left: torch.Tensor | None = None  # [d_out, d_out] or diagonal [d_out]
    right: torch.Tensor | None = None  # [d_in, d_in] or diagonal [d_in]
    dense: torch.Tensor | None = None  # [d_out, d_in]

    @property
    def factored(self) -> bool:
        return self.dense is None

    def rank_one(self) -> LayerPreconditioner:
        """Factored approximation of an elementwise preconditioner: Adafactor's ``P ~ r c^T / sum(P)``.

        Exact when ``P`` is rank one; lets the sketch of ``P * sum_t g_t x_t^T`` be taken from the factors
        ``(r * g_t, c * x_t)`` without the dense per-sample matrix.
        """
        if self.dense is None:
            return self
        rows, cols = self.dense.sum(1), self.dense.sum(0)
        return LayerPreconditioner(scale=1.0 / float(self.dense.sum()), left=rows, right=cols)

    def transform_factors(
        self, grads: torch.Tensor, inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Factors of ``u = sum_t g'_t x'_t^T`` (factored preconditioners only)."""
        grads = grads * self.scale
        if self.left is not None:
            grads = grads * self.left if self.left.ndim == 1 else grads @ self.left.t()
        if self.right is not None:
            inputs = (
                inputs * self.right if self.right.ndim == 1 else inputs @ self.right
            )  # rows of (G R)^T: x R
        return grads, inputs

    def apply(self, matrices: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Preconditioned dense gradients ``[..., d_out, d_in]`` (``inplace``: elementwise case only, reuses them)."""
        if self.dense is not None:
            return matrices.mul_(self.dense) if inplace else matrices * self.dense
        out = matrices * self.scale
        if self.left is not None:
            out = out * self.left[:, None] if self.left.ndim == 1 else self.left @ out
        if self.right is not None:
            out = out * self.right if self.right.ndim == 1 else out @ self.right
        return out


def _inner_optimizer(optimizer):
    """The torch optimizer inside accelerate / deepspeed wrappers."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def resolve_preconditioner(optimizer, choice: str = "auto") -> str:
    """``choice`` or, for ``auto``, the preconditioner matching the optimizer's class."""
    if choice not in PRECONDITIONERS:
        raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}, got {choice!r}")
    if choice != "auto":
        return choice
    inner = _inner_optimizer(optimizer)
    muon = getattr(torch.optim, "Muon", None)
    if muon is not None and isinstance(inner, muon):
        return "muon"
    if isinstance(inner, (torch.optim.Adam, torch.optim.AdamW)):
        return "adamw"
    if isinstance(inner, torch.optim.SGD):
        return "sgd"
    raise OptimizerStateError(
        f"OPUS cannot infer the update rule of {type(inner).__name__}: it reads torch Adam/AdamW, Muon and SGD "
        "state. Use one of those, or set preconditioner='sgd' to score raw gradients (identity preconditioner)."
    )


def _param_group(optimizer, param):
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return group
    return None


def _adamw_layer(optimizer, group, layer: ScoredLayer, steps_taken: int | None) -> LayerPreconditioner:
    lr = float(group["lr"])
    state = optimizer.state.get(layer.weight, {})
    step = state.get("step", 0)
    step = int(step.item()) if torch.is_tensor(step) else int(step)
    if step == 0 and not state and not steps_taken:
        return LayerPreconditioner(scale=lr)
    v = state.get("exp_avg_sq")
    if not torch.is_tensor(v) or v.shape != layer.weight.shape or not v.is_floating_point():
        raise OptimizerStateError(
            f"{type(optimizer).__name__} keeps no float 'exp_avg_sq' of the weight's shape for {layer.name} "
            f"(state keys: {sorted(state)}); the AdamW preconditioner needs torch Adam/AdamW state. Quantised "
            "(8-bit) or stateless optimizers are not supported: use preconditioner='sgd'."
        )
    if group.get("amsgrad", False):
        raise OptimizerStateError("the AdamW preconditioner does not support amsgrad=True")
    beta1, beta2 = group["betas"]
    t = step + 1
    v_hat = layer.oriented(v).float() * beta2 / (1 - beta2**t)
    coef = lr * (1 - beta1) / (1 - beta1**t)
    return LayerPreconditioner(dense=coef / (v_hat.sqrt() + group["eps"]))


def _muon_lr(lr: float, adjust: str | None, shape) -> float:
    a, b = shape[:2]
    if adjust in (None, "original"):
        return lr * math.sqrt(max(1.0, a / b))
    if adjust == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(a, b))
    return lr


def _inverse_sqrt_psd(gram: torch.Tensor, floor: float) -> torch.Tensor:
    evals, evecs = torch.linalg.eigh(gram.double())
    inv = evals.clamp(min=floor**2).rsqrt()
    return ((evecs * inv) @ evecs.t()).to(gram.dtype)


def _muon_layer(optimizer, group, layer: ScoredLayer) -> LayerPreconditioner:
    lr = _muon_lr(float(group["lr"]), group.get("adjust_lr_fn"), layer.weight.shape)
    state = optimizer.state.get(layer.weight, {})
    buf = state.get("momentum_buffer")
    if buf is None:
        if state:
            raise OptimizerStateError(
                f"{type(optimizer).__name__} keeps no 'momentum_buffer' for {layer.name}; the Muon "
                "preconditioner needs torch.optim.Muon state"
            )
        return LayerPreconditioner(scale=lr)
    mu, nesterov = group["momentum"], group.get("nesterov", True)
    m0 = layer.oriented(buf).float() * (mu * mu if nesterov else mu)
    norm = float(m0.norm())
    if norm == 0.0:
        return LayerPreconditioner(scale=lr)
    a, _, _ = group.get("ns_coefficients", (3.4445, -4.7750, 2.0315))
    floor = norm / (abs(a) ** group.get("ns_steps", 5))
    scale = lr * ((1 + mu) if nesterov else 1.0)
    if m0.shape[0] <= m0.shape[1]:
        return LayerPreconditioner(scale=scale, left=_inverse_sqrt_psd(m0 @ m0.t(), floor))
    return LayerPreconditioner(scale=scale, right=_inverse_sqrt_psd(m0.t() @ m0, floor))


def _sgd_layer(optimizer, group, layer: ScoredLayer) -> LayerPreconditioner:
    """Linear part of a torch SGD step in the new gradient ``g`` (weight decay and the old buffer are constant).

    torch.optim.SGD keeps ``buf = g`` on its first step (no dampening) and ``buf = mu buf + (1 - dampening) g``
    afterwards, and steps by ``lr * buf`` (or ``lr * (g + mu buf)`` with Nesterov), so ``du / dg`` is ``lr`` /
    ``lr (1 + mu)`` on the first step and ``lr (1 - dampening)`` / ``lr (1 + mu (1 - dampening))`` after it.
    """
    lr = float(group["lr"])
    momentum, dampening = group.get("momentum", 0.0), group.get("dampening", 0.0)
    if not momentum:
        return LayerPreconditioner(scale=lr)
    has_buffer = optimizer.state.get(layer.weight, {}).get("momentum_buffer") is not None
    fresh = 1.0 - dampening if has_buffer else 1.0  # the weight of g inside the new buffer
    if group.get("nesterov", False):
        return LayerPreconditioner(scale=lr * (1.0 + momentum * fresh))
    return LayerPreconditioner(scale=lr * fresh)


def build_preconditioners(
    optimizer, layers: list[ScoredLayer], kind: str, steps_taken: int | None = None
) -> dict[str, LayerPreconditioner | None]:
    """Per-layer preconditioner from the optimizer state as it is now (``None``: layer not optimised).

    ``steps_taken`` (optimizer steps done so far, when the caller knows it) turns a missing AdamW state after
    the first step into an error instead of the first-step identity.
    """
    inner = _inner_optimizer(optimizer)
    out: dict[str, LayerPreconditioner | None] = {}
    for layer in layers:
        group = _param_group(inner, layer.weight)
        if group is None:
            out[layer.name] = None
        elif kind == "adamw":
            out[layer.name] = _adamw_layer(inner, group, layer, steps_taken)
        elif kind == "muon":
            out[layer.name] = _muon_layer(inner, group, layer)
        elif kind == "sgd":
            out[layer.name] = _sgd_layer(inner, group, layer)
        else:
            raise ValueError(f"unknown preconditioner {kind!r}")
    if all(p is None for p in out.values()):
        raise OptimizerStateError("the optimizer holds none of the scored block Linear weights")
    return out


# ---------------------------------------------------------------------------------------- inner products


GRAM_WEIGHTS = ("numel", "sqrt_numel")
SELECTIONS = ("boltzmann", "greedy", "topk")


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
    ``"sqrt_numel"`` weights both ``1 / sqrt(numel)`` (this project's earlier reading of the paper's text).
    """
    if gram_weight not in GRAM_WEIGHTS:
        raise ValueError(f"gram_weight must be one of {GRAM_WEIGHTS}, got {gram_weight!r}")
    numel = layer.weight.numel()
    return 1.0 / math.sqrt(numel), (1.0 / numel if gram_weight == "numel" else 1.0 / math.sqrt(numel))


EXACT_ELEMENTS = 2**24


def _dense_updates(gy, x, pre: LayerPreconditioner, start: int, stop: int) -> torch.Tensor:
    """Preconditioned dense per-sample updates of candidate rows ``start:stop``: ``[rows, d_out, d_in]``."""
    if pre.factored:
        g2, x2 = pre.transform_factors(gy[start:stop], x[start:stop])
        return per_sample_updates(g2, x2)
    return pre.apply(per_sample_updates(gy[start:stop], x[start:stop]), inplace=True)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's weighted contribution to the alignment ``[n]`` and the Gram matrix ``[n, n]``.

    ``x [rows, T, d_in]`` and ``gy [rows, T, d_out]`` hold the candidate rows first, then the proxy rows.

    Without a ``sketch`` the inner products are exact. With one, factored preconditioners (SGD, Muon, AdamW's
    first step, or AdamW under ``rank_one_sketch``) are sketched straight from the (gradient, input) factors;
    AdamW's elementwise preconditioner needs the dense per-sample matrices, built ``chunk_size`` candidates at
    a time and dropped once sketched. Whenever the dense per-sample matrices are formed anyway (the elementwise
    preconditioner, or a sketch whose ``forms_dense`` is true) and ``n * d_out * d_in <= exact_elements``, the
    inner products are taken between the dense matrices instead of their sketches: exact, and cheaper than the
    scatter into the sketch (one ``n x n`` GEMM instead of ``n * d_out * d_in`` scattered adds).
    ``exact_elements=0`` always sketches.
    """
    n = num_candidates
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, gy = x.to(dtype), gy.to(dtype)
    if sketch is not None and rank_one_sketch:
        pre = pre.rank_one()
    forms_dense = sketch is None or not pre.factored or getattr(sketch, "forms_dense", False)
    if sketch is None or (forms_dense and n * layer.d_out * layer.d_in <= exact_elements):
        # one GEMM for the proxy's summed gradient and one batched GEMM for all candidates (exact mode keeps
        # the n x d_out x d_in features anyway, so chunking would only add a copy)
        target = (gy[n:].reshape(-1, gy.shape[-1]).t() @ x[n:].reshape(-1, x.shape[-1])).flatten()
        feats = _dense_updates(gy, x, pre, 0, n).flatten(1)
    else:
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
    w_align, w_gram = layer_weights(layer, gram_weight)
    return w_align * (feats @ target.to(feats.dtype)), w_gram * (feats @ feats.t())


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
    alignment = gram = None
    for layer in layers:
        pre = preconditioners.get(layer.name)
        if pre is None:
            continue
        a, g = layer_statistics(
            layer,
            grads.inputs[layer.name],
            grads.output_grads[layer.name],
            pre,
            num_candidates,
            (sketches or {}).get(layer.name),
            chunk_size,
            rank_one_sketch,
            gram_weight,
            exact_elements,
        )
        alignment = a if alignment is None else alignment + a
        gram = g if gram is None else gram + g
    return CandidateStatistics(alignment.double(), gram.double(), row_losses=grads.row_losses)


def _scoring_objective(sums, counts, num_candidates):
    counts = counts.to(sums.dtype)
    cand = sums[:num_candidates] / counts[:num_candidates].clamp(min=1)
    proxy_tokens = counts[num_candidates:].sum()
    if proxy_tokens == 0:
        raise ValueError("the proxy batch has no predicted token (empty proxy rows?)")
    return cand.sum() + sums[num_candidates:].sum() / proxy_tokens, (sums / counts.clamp(min=1)).detach()


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
    state = {"alignment": None, "gram": None, "seconds": 0.0}
    inputs: dict[str, torch.Tensor] = {}
    outputs: list[torch.Tensor] = []
    seen: set[str] = set()

    def on_grad(layer, pre):
        def fn(grad):
            t0 = clock()
            a, g = layer_statistics(
                layer,
                inputs.pop(layer.name),
                grad,
                pre,
                num_candidates,
                (sketches or {}).get(layer.name),
                chunk_size,
                rank_one_sketch,
                gram_weight,
                exact_elements,
            )
            state["alignment"] = a if state["alignment"] is None else state["alignment"] + a
            state["gram"] = g if state["gram"] is None else state["gram"] + g
            state["seconds"] += clock() - t0

        return fn

    def forward_hook(layer):
        def fn(_module, args, output):
            seen.add(layer.name)
            pre = preconditioners.get(layer.name)
            if pre is None or not output.requires_grad:
                return
            inputs[layer.name] = args[0].detach()
            output.register_hook(on_grad(layer, pre))
            outputs.append(output)

        return fn

    handles = [layer.module.register_forward_hook(forward_hook(layer)) for layer in layers]
    try:
        with torch.enable_grad():
            sums, counts = row_mean_losses(model, input_ids, labels, position_ids)
            objective, row_losses = _scoring_objective(sums, counts, num_candidates)
            missing = [layer.name for layer in layers if layer.name not in seen]
            if missing:
                raise RuntimeError(f"layers not reached by the forward pass: {missing[:3]}")
            if not outputs:
                raise OptimizerStateError("the optimizer holds none of the scored block Linear weights")
            # gradients w.r.t. the layer outputs only: no weight gradient, no .grad touched; the returned
            # tensors are dropped at once (the hooks already consumed them)
            torch.autograd.grad(objective, outputs, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
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


# ---------------------------------------------------------------------------------------------- selection


@dataclass
class Selection:
    indices: list[int]
    utilities: torch.Tensor  # first-draw utilities (after standardisation)
    effective_sample_size: float  # 1 / sum p^2 of the first draw's distribution
    utility_spread: float  # std of the raw alignment


def select_candidates(
    alignment: torch.Tensor,
    gram: torch.Tensor,
    k: int,
    temperature: float = 0.9,
    redundancy_weight: float = 1.0,
    standardize: bool = True,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    selection: str | None = None,
) -> Selection:
    """Pick ``k`` candidates by sequential Boltzmann draws without replacement, greedily, or top-k.

    ``U_z = a_z - lambda * sum_{j picked} gram[z, j]``. With ``standardize`` the alignment is z-scored over the
    buffer and the Gram matrix divided by the mean squared update norm, so ``temperature`` is in standard
    deviations and a picked candidate lowers its exact duplicate by ``lambda``. Without it the raw values of
    the paper are used (they are ~1e-3, so ``temperature=0.9`` is close to uniform sampling).

    Args:
        selection: ``"boltzmann"`` (paper, default), ``"greedy"`` (argmax of ``U_z`` with the redundancy
            update after each pick; also ``greedy=True``) or ``"topk"``: the ``k`` largest alignments, no
            redundancy term and no sampling (GhostSuite's "OPUS top-k": validation loss 2.830 vs Boltzmann's
            2.845 on GPT-2-small / Pile).
    """
    mode = selection or ("greedy" if greedy else "boltzmann")
    if mode not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {mode!r}")
    n = alignment.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"cannot select {k} of {n} candidates")
    if temperature <= 0 and mode == "boltzmann":
        raise ValueError(f"temperature must be > 0 (or use greedy / topk selection), got {temperature}")
    a = alignment.double()
    g = gram.double()
    spread = float(a.std()) if n > 1 else 0.0
    if standardize:
        a = (a - a.mean()) / a.std().clamp(min=1e-30) if n > 1 else a - a.mean()
        g = g / g.diagonal().mean().clamp(min=1e-30)
    first = a.clone()
    if mode == "topk":
        # ties broken by position (stable sort): deterministic
        order = torch.sort(-first, stable=True).indices[:k]
        return Selection([int(i) for i in order], first, 1.0, spread)
    penalty = torch.zeros_like(a)
    picked: list[int] = []
    available = torch.ones(n, dtype=torch.bool)
    probs0 = torch.softmax(first / max(temperature, 1e-300), 0) if mode == "boltzmann" else None
    for _ in range(k):
        utility = (a - redundancy_weight * penalty).masked_fill(~available, float("-inf"))
        if mode == "greedy":
            choice = int(utility.argmax())
        else:
            probs = torch.softmax(utility / temperature, 0)
            choice = int(torch.multinomial(probs.float(), 1, generator=generator))
        picked.append(choice)
        available[choice] = False
        penalty = penalty + g[:, choice]
    ess = float(1.0 / (probs0**2).sum()) if probs0 is not None else 1.0
    return Selection(picked, first, ess, spread)


def opus_row_window(labels: torch.Tensor, window: int, generator: torch.Generator | None = None) -> list[int]:
    """Random start of a ``window``-token span inside each row's trained part (0 when the row is shorter)."""
    starts = []
    for row in labels:
        trained = (row != IGNORE_INDEX).nonzero()
        length = int(trained[-1]) + 1 if trained.numel() else row.shape[0]
        room = max(0, length - window)
        starts.append(int(torch.randint(room + 1, (1,), generator=generator)) if room else 0)
    return starts


def unwrap_for_scoring(model: nn.Module) -> nn.Module:
    """The plain model (outside DDP / torch.compile wrappers)."""
    return unwrap_model(model)
