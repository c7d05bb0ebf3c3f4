"""OPUS per-sample layer gradients: the block Linear layers that are scored, one joint forward/backward that
takes gradients with respect to their outputs only, and the random scoring window of each row."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..model_adapter import get_model_adapter, unsharded_root, unwrap_model
from ..token_loss import IGNORE_INDEX, final_hidden_states, logits_to_losses, prediction_mask, split_causal_lm


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

    def wrap(layer):
        inner = make_hook(layer)

        def fn(module, args, output):
            reached.add(layer.name)
            return inner(module, args, output)

        return fn

    handles = [layer.module.register_forward_hook(wrap(layer)) for layer in layers]
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

    def hook(layer):
        def fn(_module, args, output):
            captured[layer.name] = (args[0].detach(), output)

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
    return LayerGradients(inputs, output_grads, row_losses)


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


def scoring_objective(sums, counts, num_candidates):
    counts = counts.to(sums.dtype)
    cand = sums[:num_candidates] / counts[:num_candidates].clamp(min=1)
    proxy_tokens = counts[num_candidates:].sum()
    if proxy_tokens == 0:
        raise ValueError("the proxy batch has no predicted token (empty proxy rows?)")
    return cand.sum() + sums[num_candidates:].sum() / proxy_tokens, (sums / counts.clamp(min=1)).detach()
