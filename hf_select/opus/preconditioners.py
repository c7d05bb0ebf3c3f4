"""OPUS preconditioners: the first-order update ``u = P_t g`` of one SGD / AdamW / Muon step, with the
optimizer's state frozen at the start of the step (see :mod:`hf_select.opus.utility` for the formulas)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .gradients import ScoredLayer

PRECONDITIONERS = ("auto", "sgd", "adamw", "muon")


class OptimizerStateError(ValueError):
    """The optimizer does not keep the state that the requested OPUS preconditioner reads."""


# ----------------------------------------------------------------------------------------------- layers


# ---------------------------------------------------------------------------------------- preconditioner


@dataclass
class LayerPreconditioner:
    """``u = scale * L @ G @ R`` (factored; ``L``/``R`` optional matrices, or vectors for diagonal ones) or
    ``u = dense * G`` (elementwise)."""

    scale: float = 1.0
    left: torch.Tensor | None = None  # [d_out, d_out] or diagonal [d_out]
    right: torch.Tensor | None = None  # [d_in, d_in] or diagonal [d_in]
    dense: torch.Tensor | None = None  # [d_out, d_in]
    # sharded optimizer state (FSDP): ``dense`` covers only ``[start, stop)`` along ``dim`` of the oriented
    # ``[d_out, d_in]`` weight, and the layer's inner products are this rank's part of the full ones
    block: tuple[int, int, int] | None = None  # (dim, start, stop)

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
    v, block = _local_shard(v, layer)
    v_hat = layer.oriented(v).float() * beta2 / (1 - beta2**t)
    coef = lr * (1 - beta1) / (1 - beta1**t)
    return LayerPreconditioner(dense=coef / (v_hat.sqrt() + group["eps"]), block=block)


def _local_shard(tensor: torch.Tensor, layer: ScoredLayer) -> tuple[torch.Tensor, tuple[int, int, int] | None]:
    """This rank's part of a DTensor optimizer state (FSDP2 shards along one dimension) and its block in the
    oriented ``[d_out, d_in]`` weight; a plain tensor is returned whole with ``None``. Nothing is gathered."""
    try:
        from torch.distributed.tensor import DTensor, Shard
    except ImportError:
        return tensor, None
    if not isinstance(tensor, DTensor):
        return tensor, None
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    dims = {p.dim for p in tensor.placements if isinstance(p, Shard)}
    if len(dims) != 1 or any(not (p.is_replicate() or isinstance(p, Shard)) for p in tensor.placements):
        raise OptimizerStateError(
            f"the optimizer state of {layer.name} is a DTensor with placements {tensor.placements}; OPUS reads "
            "state sharded along one dimension (FSDP2) only"
        )
    (dim,) = dims
    shape, offset = compute_local_shape_and_global_offset(tensor.shape, tensor.device_mesh, tensor.placements)
    oriented_dim = 1 - dim if layer.transposed else dim
    return tensor.to_local(), (oriented_dim, int(offset[dim]), int(offset[dim]) + int(shape[dim]))


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
