"""OPUS per-sample layer gradients: the block Linear layers that are scored, one joint forward/backward that
takes gradients with respect to their outputs only, and the random scoring window of each row."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ..model_adapter import get_model_adapter, unsharded_root
from ..token_loss import IGNORE_INDEX, final_hidden_states, logits_to_losses, prediction_mask, split_causal_lm


@dataclass
class ScoredLayer:
    """A Linear-like layer inside a decoder block, seen as ``y = x W^T`` with ``W`` of shape ``[d_out, d_in]``.

    ``num_experts > 0``: a fused ``[E, ., .]`` expert weight of transformers' MoE experts modules; expert
    ``e``'s matrix is ``weight[e]`` (``[d_out, d_in]``, or its transpose when ``transposed``), and its
    per-sample gradient sums over the tokens routed to ``e`` (:func:`expert_forward`).
    """

    name: str
    module: nn.Module
    weight: nn.Parameter
    transposed: bool  # GPT-2 Conv1D / transposed expert layouts store W^T
    num_experts: int = 0

    @property
    def d_out(self) -> int:
        return self.weight.shape[-2] if not self.transposed else self.weight.shape[-1]

    @property
    def d_in(self) -> int:
        return self.weight.shape[-1] if not self.transposed else self.weight.shape[-2]

    @property
    def sketch_shape(self) -> tuple[int, int]:
        """The matrix a sketch of this weight covers: expert ``e`` is rows ``e * d_out:(e + 1) * d_out``."""
        return max(1, self.num_experts) * self.d_out, self.d_in

    def oriented(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor shaped like the weight, in ``[..., d_out, d_in]`` orientation."""
        return tensor.transpose(-1, -2) if self.transposed else tensor


_EXPERT_LAYOUT = ("has_gate", "has_bias", "is_transposed", "num_experts")


def _expert_layers(model: nn.Module, index: int, name: str, module: nn.Module, trainable_only: bool):
    """The fused expert weights of a transformers experts module, or an error naming what cannot be read."""
    fused = [n for n, p in module.named_parameters(recurse=False) if p.ndim == 3]
    family = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    missing = [attr for attr in _EXPERT_LAYOUT if not hasattr(module, attr)]
    if missing or getattr(module, "has_post_expert_norm", False):
        raise ValueError(
            f"OPUS cannot read the expert layout of {type(module).__name__} ({family}, layers.{index}.{name}): "
            f"it holds 3-D weights {fused} but not the layout of transformers' fused experts "
            f"(use_experts_implementation: {', '.join(_EXPERT_LAYOUT)}; no post-expert norm)"
        )
    first = "gate_up_proj" if module.has_gate else "up_proj"
    layers = []
    for attr in (first, "down_proj"):
        weight = getattr(module, attr, None)
        if not isinstance(weight, torch.Tensor) or weight.ndim != 3 or weight.shape[0] != module.num_experts:
            raise ValueError(
                f"OPUS cannot read the expert layout of {type(module).__name__} ({family}): no 3-D {attr!r} "
                f"with {module.num_experts} experts"
            )
        if trainable_only and not weight.requires_grad:
            continue
        full_name = f"layers.{index}.{name}.{attr}"
        layers.append(ScoredLayer(full_name, module, weight, bool(module.is_transposed), module.num_experts))
    return layers


def block_linear_layers(model: nn.Module, trainable_only: bool = True) -> list[ScoredLayer]:
    """The Linear (and GPT-2 Conv1D) layers and the fused MoE expert weights inside the decoder blocks."""
    adapter = get_model_adapter(model)
    layers = []
    for index, block in enumerate(adapter.layers):
        for name, module in block.named_modules():
            if not isinstance(module, nn.modules.conv._ConvNd) and any(
                p.ndim == 3 for p in module.parameters(recurse=False)
            ):
                layers.extend(_expert_layers(model, index, name, module, trainable_only))
                continue
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


# ------------------------------------------------------------------------------------------------ experts


@dataclass
class ExpertRouting:
    """The (token, expert) pairs of one experts module, sorted by expert: ``counts[e]`` pairs go to expert ``e``."""

    expert: torch.Tensor  # [S]
    row: torch.Tensor  # [S] row of the joint batch
    position: torch.Tensor  # [S] token position in the row
    counts: list[int]
    rows: int
    length: int

    def expert_factors(self, pairs: torch.Tensor, e: int) -> torch.Tensor:
        """Expert ``e``'s pairs placed at their ``(row, position)``: ``[rows, length, d]``, zero elsewhere."""
        start = sum(self.counts[:e])
        stop = start + self.counts[e]
        out = pairs.new_zeros(self.rows, self.length, pairs.shape[-1])
        out[self.row[start:stop], self.position[start:stop]] = pairs[start:stop]
        return out


def _expert_linear(x: torch.Tensor, weight, bias, counts: list[int], transposed: bool) -> torch.Tensor:
    outs = []
    for e, part in enumerate(x.split(counts)):
        w = weight[e] if transposed else weight[e].t()
        out = part @ w
        outs.append(out if bias is None else out + bias[e])
    return torch.cat(outs)


def expert_forward(module: nn.Module, hidden: torch.Tensor, top_k_index, top_k_weights, length: int):
    """transformers' fused experts forward with its projections exposed.

    The computation of transformers' ``batched_mm`` experts implementation (``use_experts_implementation``:
    ``has_gate``, ``has_bias``, ``is_transposed``, ``_apply_gate`` / ``act_fn``), one expert at a time over the
    tokens routed to it. Returns ``(output, taps, routing)`` with ``taps[attr] = (inputs [S, d_in], outputs
    [S, d_out])`` of each projection over the (token, expert) pairs sorted by expert.
    """
    shape = hidden.shape
    hidden = hidden.reshape(-1, shape[-1])
    k = top_k_index.shape[-1]
    expert = top_k_index.reshape(-1)
    token = torch.arange(hidden.shape[0], device=hidden.device).repeat_interleave(k)
    weight = top_k_weights.reshape(-1)
    keep = expert < module.num_experts  # expert-parallel sentinels
    expert, token, weight = expert[keep], token[keep], weight[keep]
    order = torch.argsort(expert, stable=True)
    expert, token, weight = expert[order], token[order], weight[order]
    counts = torch.bincount(expert, minlength=module.num_experts).tolist()
    first = "gate_up_proj" if module.has_gate else "up_proj"
    bias1 = getattr(module, f"{first}_bias") if module.has_bias else None
    bias2 = module.down_proj_bias if module.has_bias else None
    x1 = hidden[token]
    y1 = _expert_linear(x1, getattr(module, first), bias1, counts, module.is_transposed)
    h = module._apply_gate(y1) if module.has_gate else module.act_fn(y1)
    y2 = _expert_linear(h, module.down_proj, bias2, counts, module.is_transposed)
    out = torch.zeros_like(hidden).index_add(0, token, (y2 * weight[:, None]).to(hidden.dtype))
    if hidden.shape[0] % length:
        raise ValueError(f"{type(module).__name__} got {hidden.shape[0]} tokens, not rows of {length}")
    routing = ExpertRouting(expert, token // length, token % length, counts, hidden.shape[0] // length, length)
    return out.reshape(shape), {first: (x1, y1), "down_proj": (h, y2)}, routing


def _routing_arguments(module: nn.Module, args, kwargs):
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    values = list(bound.arguments.values())
    if len(values) < 3:
        raise ValueError(f"cannot read the routing of {type(module).__name__}: its forward got {len(values)} arguments")
    return values[:3]


# ------------------------------------------------------------------------------------- layer gradients


@dataclass
class LayerGradients:
    """Inputs ``x [rows, T, d_in]`` and output gradients ``gy [rows, T, d_out]`` of every scored layer.

    Fused expert weights hold ``[S, d]`` tensors over their (token, expert) pairs, placed by ``routing``.
    """

    inputs: dict[str, torch.Tensor]
    output_grads: dict[str, torch.Tensor]
    row_losses: torch.Tensor  # mean token loss per row (no grad)
    routing: dict[str, ExpertRouting] = field(default_factory=dict)


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


@contextlib.contextmanager
def hooked_scoring_objective(
    model: nn.Module,
    layers: list[ScoredLayer],
    make_hook: Callable[[ScoredLayer], Callable],
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor,
    num_candidates: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The joint scoring forward with ``make_hook(layer)`` as a forward hook on every scored layer.

    Yields ``(objective, row_losses)`` (:func:`scoring_objective`) with grad enabled, so the caller takes its
    gradients inside the block; the hooks are removed on exit. A layer the forward never reached is an error.
    """
    reached: set[str] = set()
    length = input_ids.shape[1]

    def wrap(layer):
        inner = make_hook(layer)

        def fn(module, args, output):
            reached.add(layer.name)
            return inner(module, args, output)

        return fn

    def wrap_experts(module, expert_layers):
        hooks = [(layer, make_hook(layer)) for layer in expert_layers]

        def fn(module, args, kwargs, output):
            if not torch.is_grad_enabled():  # a no-grad forward inside the scoring one (the model probe)
                return None
            hidden, top_k_index, top_k_weights = _routing_arguments(module, args, kwargs)
            replaced, taps, routing = expert_forward(module, hidden, top_k_index, top_k_weights, length)
            reference = output[0] if isinstance(output, tuple) else output
            tol = 64 * torch.finfo(reference.dtype).eps * float(reference.detach().abs().max().clamp(min=1e-30))
            if replaced.shape != reference.shape or float((replaced - reference).detach().abs().max()) > tol:
                raise ValueError(
                    f"OPUS cannot read the expert layout of {type(module).__name__}: its output differs from "
                    "transformers' fused-experts computation (has_gate / has_bias / is_transposed / _apply_gate)"
                )
            for layer, inner in hooks:
                reached.add(layer.name)
                x, y = taps[layer.name.rsplit(".", 1)[1]]
                inner(module, (x,), y, routing)
            return (replaced, *output[1:]) if isinstance(output, tuple) else replaced

        return fn

    experts: dict[int, list[ScoredLayer]] = {}
    for layer in layers:
        if layer.num_experts:
            experts.setdefault(id(layer.module), []).append(layer)
    handles = [layer.module.register_forward_hook(wrap(layer)) for layer in layers if not layer.num_experts]
    modules = {id(layer.module): layer.module for layer in layers}
    handles += [
        modules[key].register_forward_hook(wrap_experts(modules[key], group), with_kwargs=True)
        for key, group in experts.items()
    ]
    try:
        # the root's parameters stay gathered through the caller's backward (the LM head is in the graph)
        with torch.enable_grad(), unsharded_root(model):
            sums, counts = row_mean_losses(model, input_ids, labels, position_ids)
            objective, row_losses = scoring_objective(sums, counts, num_candidates)
            missing = [layer.name for layer in layers if layer.name not in reached]
            if missing:
                raise RuntimeError(f"layers not reached by the forward pass: {missing[:3]}")
            yield objective, row_losses
    finally:
        for handle in handles:
            handle.remove()


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
    routings: dict[str, ExpertRouting] = {}

    def hook(layer):
        def fn(_module, args, output, routing=None):
            captured[layer.name] = (args[0].detach(), output)
            if routing is not None:
                routings[layer.name] = routing

        return fn

    with hooked_scoring_objective(model, layers, hook, input_ids, labels, position_ids, num_candidates) as (
        objective,
        row_losses,
    ):
        outputs = [captured[layer.name][1] for layer in layers]
        grads = torch.autograd.grad(objective, outputs, allow_unused=True)
    inputs, output_grads = {}, {}
    for layer, grad in zip(layers, grads):
        x = captured[layer.name][0]
        inputs[layer.name] = x
        output_grads[layer.name] = (
            torch.zeros(*x.shape[:-1], layer.d_out, dtype=x.dtype, device=x.device) if grad is None else grad
        )
    return LayerGradients(inputs, output_grads, row_losses, routings)


def opus_row_window(labels: torch.Tensor, window: int, generator: torch.Generator | None = None) -> list[int]:
    """Random start of a ``window``-token span inside each row's trained part (0 when the row is shorter)."""
    starts = []
    for row in labels:
        trained = (row != IGNORE_INDEX).nonzero()
        length = int(trained[-1]) + 1 if trained.numel() else row.shape[0]
        room = max(0, length - window)
        starts.append(int(torch.randint(room + 1, (1,), generator=generator)) if room else 0)
    return starts


def scoring_objective(sums, counts, num_candidates):
    counts = counts.to(sums.dtype)
    cand = sums[:num_candidates] / counts[:num_candidates].clamp(min=1)
    proxy_tokens = counts[num_candidates:].sum()
    if proxy_tokens == 0:
        raise ValueError("the proxy batch has no predicted token (empty proxy rows?)")
    return cand.sum() + sums[num_candidates:].sum() / proxy_tokens, (sums / counts.clamp(min=1)).detach()
