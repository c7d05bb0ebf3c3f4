"""OPUS preconditioners: the first-order update ``u = P_t g`` of one SGD / AdamW / Muon step, with the
optimizer's state frozen at the start of the step (see :mod:`hf_select.opus.alignment` for the formulas)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .gradients import ScoredLayer

PRECONDITIONERS = ("auto", "sgd", "adamw", "muon")


class OptimizerStateError(ValueError):
    """The optimizer does not keep the state that the requested OPUS preconditioner reads."""


MUON_LINEARIZATIONS = ("polar", "newton_schulz", "one_step")


@dataclass
class SpectralDerivative:
    """Derivative of a singular-value map ``F(M) = U f(S) V^T`` at ``M0 = U S V^T``, in ``M0``'s singular basis.

    For a direction ``E`` with ``K = U^T E V`` (full ``U``, ``V``; ``r = min(m, n)``), the Daleckii-Krein
    formula gives ``U^T DF[E] V`` as: on the ``r x r`` block, ``sym * (K + K^T) / 2 + skew * (K - K^T) / 2``
    with ``sym_ij = (f_i - f_j) / (s_i - s_j)`` (``f'(s_i)`` on the diagonal) and ``skew_ij = (f_i + f_j) /
    (s_i + s_j)``; outside it (the columns of a wide matrix beyond ``r``, the rows of a tall one),
    ``f_i / s_i`` times ``K`` for the singular direction ``i`` the entry shares. For the polar factor (``f =
    1``) this is ``U [((K - K^T) / (s_i + s_j)) | S^-1 K_perp] V^T``. ``correction = (s, t)`` subtracts
    ``<diag(s), K> diag(t)`` (the Frobenius normalisation of Newton-Schulz).
    """

    sym: torch.Tensor  # [r, r]
    skew: torch.Tensor  # [r, r]
    off: torch.Tensor  # [r]
    tall: bool
    correction: tuple[torch.Tensor, torch.Tensor] | None = None

    def to(self, dtype) -> SpectralDerivative:
        cast = None if self.correction is None else tuple(t.to(dtype) for t in self.correction)
        return SpectralDerivative(
            self.sym.to(dtype), self.skew.to(dtype), self.off.to(dtype), self.tall, cast
        )

    def apply(self, k: torch.Tensor) -> torch.Tensor:
        """``[..., m, n]`` matrices in the singular basis -> their image under the derivative."""
        r = self.sym.shape[0]
        block = k[..., :r, :r]
        sym, skew = (block + block.transpose(-1, -2)) / 2, (block - block.transpose(-1, -2)) / 2
        out = torch.empty_like(k)
        out[..., :r, :r] = self.sym * sym + self.skew * skew
        if self.correction is not None:
            s, t = self.correction
            inner = (block.diagonal(dim1=-2, dim2=-1) * s).sum(-1)
            out[..., :r, :r] -= inner[..., None, None] * torch.diag(t)
        if self.tall:
            out[..., r:, :] = k[..., r:, :] * self.off
        else:
            out[..., :, r:] = k[..., :, r:] * self.off[:, None]
        return out


@dataclass
class LayerPreconditioner:
    """``u = scale * L @ G @ R`` (factored; ``L``/``R`` optional matrices, or vectors for diagonal ones),
    ``u = dense * G`` (elementwise), or ``u = scale * spectral(U^T G V)`` in the orthonormal ``basis = (U, V)``
    (Muon; inner products are taken in that basis, where they are the same).

    ``basis``: per-sample gradients and the proxy gradient are rotated first (:meth:`rotate`); :meth:`apply`
    then works on rotated matrices.
    """

    scale: float = 1.0
    left: torch.Tensor | None = None  # [d_out, d_out] or diagonal [d_out]
    right: torch.Tensor | None = None  # [d_in, d_in] or diagonal [d_in]
    dense: torch.Tensor | None = None  # [d_out, d_in], or [E, d_out, d_in] for fused expert weights
    basis: tuple[torch.Tensor, torch.Tensor] | None = None  # U [d_out, d_out], V [d_in, d_in]
    spectral: SpectralDerivative | None = None
    # sharded optimizer state (FSDP): ``dense`` covers only ``[start, stop)`` along ``dim`` of the oriented
    # ``[d_out, d_in]`` weight, and the layer's inner products are this rank's part of the full ones
    block: tuple[int, int, int] | None = None  # (dim, start, stop)

    @property
    def factored(self) -> bool:
        return self.dense is None and self.spectral is None

    def expert(self, e: int) -> LayerPreconditioner:
        """Expert ``e``'s preconditioner of a fused ``[E, d_out, d_in]`` weight (elementwise: its slice)."""
        if self.dense is not None and self.dense.ndim == 3:
            return LayerPreconditioner(dense=self.dense[e])
        return self

    def rotate(self, grads: torch.Tensor, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Factors in the basis: ``sum_t g_t x_t^T -> U^T (sum_t g_t x_t^T) V`` (identity without a basis)."""
        if self.basis is None:
            return grads, inputs
        u, v = self.basis
        return grads @ u.to(grads.dtype), inputs @ v.to(inputs.dtype)

    def unrotate(self, matrices: torch.Tensor) -> torch.Tensor:
        """``[..., d_out, d_in]`` matrices from the basis back to the weight's coordinates."""
        if self.basis is None:
            return matrices
        u, v = self.basis
        return u.to(matrices.dtype) @ matrices @ v.t().to(matrices.dtype)

    def rank_one(self) -> LayerPreconditioner:
        """Factored approximation of an elementwise preconditioner: Adafactor's ``P ~ r c^T / sum(P)``.

        Exact when ``P`` is rank one; lets the sketch of ``P * sum_t g_t x_t^T`` be taken from the factors
        ``(r * g_t, c * x_t)`` without the dense per-sample matrix. Other preconditioners are returned as is.
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
        if self.spectral is not None:
            return self.spectral.apply(matrices) * self.scale
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


def _adamw_layer(
    optimizer, group, layer: ScoredLayer, steps_taken: int | None, dtype
) -> LayerPreconditioner:
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
    v_hat = layer.oriented(v).to(dtype) * beta2 / (1 - beta2**t)
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


def _newton_schulz_map(coefficients, steps: int):
    """``(f, f')`` of ``steps`` Newton-Schulz iterations on one singular value: ``s -> a s + b s^3 + c s^5``."""
    a, b, c = coefficients

    def f(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slope = torch.ones_like(s)
        for _ in range(steps):
            slope = slope * (a + 3 * b * s**2 + 5 * c * s**4)
            s = a * s + b * s**3 + c * s**5
        return s, slope

    return f


def _muon_layer(optimizer, group, layer: ScoredLayer, linearization: str, dtype) -> LayerPreconditioner:
    """First-order change of a torch.optim.Muon step in the new gradient ``g`` (state frozen).

    torch's Muon keeps ``B <- (1 - mu) g + mu B`` and orthogonalises ``M = g.lerp(B, mu) = (1 - mu^2) g +
    mu^2 B_old`` (Nesterov) or ``M = B = (1 - mu) g + mu B_old``, then steps by ``lr' NS(M)`` with the
    shape-adjusted ``lr'``. So ``u = lr' c_g DNS(M0)[g]`` with ``c_g = 1 - mu^2`` (resp. ``1 - mu``) and
    ``M0 = mu^2 B_old`` (resp. ``mu B_old``); ``DNS(M0)`` is the derivative of the orthogonalisation at ``M0``
    (:func:`spectral_derivative`, ``linearization`` picks which map).

    ``linearization="one_step"`` is the official OPUS code's form instead (``_get_muon_S_matrix``): ``u = lr'
    c_g S g`` with ``S = a I + b A + c A^2``, ``A = X X^T``, ``X = M0 / ||M0||_F``: the left polynomial of one
    Newton-Schulz iteration at the normalised momentum, frozen and applied to the raw gradient. It is not the
    step's derivative (no ``1 / ||M0||_F``, no transposed terms); it keeps the factored form, so its sketch is
    taken from the factors.
    """
    if layer.num_experts:
        raise OptimizerStateError(
            f"the Muon preconditioner reads 2-D weights; {layer.name} is a fused 3-D expert weight"
        )
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
    mu, nesterov = float(group["momentum"]), group.get("nesterov", True)
    m0 = layer.oriented(buf).to(dtype) * (mu * mu if nesterov else mu)
    norm = float(m0.norm())
    if norm <= float(group.get("eps", 1e-7)):  # NS(M0 + c g) is not differentiable at M0 = 0: identity
        return LayerPreconditioner(scale=lr)
    fresh = (1.0 - mu * mu) if nesterov else (1.0 - mu)
    coefficients = tuple(group.get("ns_coefficients", (3.4445, -4.7750, 2.0315)))
    steps = int(group.get("ns_steps", 5))
    if linearization == "one_step":
        a, b, c = coefficients
        x = m0 / norm
        gram = x @ x.t()
        left = a * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device) + b * gram + c * gram @ gram
        return LayerPreconditioner(scale=lr * fresh, left=left.to(dtype))
    basis, spectral, factor = spectral_derivative(m0, linearization, coefficients, steps)
    return LayerPreconditioner(
        scale=lr * fresh * factor,
        basis=tuple(t.to(dtype) for t in basis),
        spectral=spectral.to(dtype),
    )


def spectral_derivative(
    matrix: torch.Tensor,
    linearization: str = "newton_schulz",
    coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
    steps: int = 5,
) -> tuple[tuple[torch.Tensor, torch.Tensor], SpectralDerivative, float]:
    """Derivative at ``M0 = matrix`` of Muon's orthogonalisation, as ``(basis, map, factor)``.

    With the full SVD ``M0 = U S V^T`` (``U`` ``[m, m]``, ``V`` ``[n, n]``; computed in ``matrix``'s dtype),
    the derivative in a direction ``E`` is ``factor * U map(U^T E V) V^T``; see :class:`SpectralDerivative`.
    ``linearization``:

    - ``"polar"``: the orthogonal polar factor ``U V^T`` that Newton-Schulz approximates (scale-invariant, so
      the Frobenius normalisation drops out). Singular values are floored at ``||M0||_F / a^k``: Newton-Schulz
      with ``k`` steps has slope ``a^k / ||M0||_F`` at zero, so it does not resolve smaller ones.
    - ``"newton_schulz"``: the exact derivative of the ``k`` Newton-Schulz iterations torch runs, ``X = M /
      ||M||_F``, then ``X <- a X + b (X X^T) X + c (X X^T)^2 X`` (in exact arithmetic; torch runs them in
      bfloat16), including the normalisation.

    (``"one_step"``, the official code's form, is built by the caller: it is not a derivative.)
    """
    m, n = matrix.shape
    u, s, vh = torch.linalg.svd(matrix, full_matrices=True)
    s = s.double()  # the SVD in the matrix's precision, the map's coefficients in float64
    norm = float(s.norm())
    correction = None
    if linearization == "polar":
        a = abs(coefficients[0])
        floor = norm / a**steps if a > 1 else norm * torch.finfo(torch.float64).eps
        sigma = s.clamp(min=max(floor, norm * torch.finfo(torch.float64).eps))
        values, slopes, factor = torch.ones_like(sigma), torch.zeros_like(sigma), 1.0
    elif linearization == "newton_schulz":
        sigma = s / norm
        values, slopes = _newton_schulz_map(coefficients, steps)(sigma)
        factor = 1.0 / norm
        correction = (sigma, sigma * slopes)
    else:
        raise ValueError(f"linearization must be 'newton_schulz' or 'polar', got {linearization!r}")
    # divided differences (f_i - f_j) / (s_i - s_j) on the symmetric part, f' where the values coincide
    gap = sigma[:, None] - sigma[None, :]
    close = gap.abs() <= 1e-9 * float(sigma.max())
    mean_slope = (slopes[:, None] + slopes[None, :]) / 2
    sym = torch.where(close, mean_slope, (values[:, None] - values[None, :]) / torch.where(close, 1.0, gap))
    skew = (values[:, None] + values[None, :]) / (sigma[:, None] + sigma[None, :])
    spectral = SpectralDerivative(sym=sym, skew=skew, off=values / sigma, tall=m > n, correction=correction)
    return (u, vh.t()), spectral, factor


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
    optimizer,
    layers: list[ScoredLayer],
    kind: str,
    steps_taken: int | None = None,
    muon_linearization: str = "newton_schulz",
) -> dict[str, LayerPreconditioner | None]:
    """Per-layer preconditioner from the optimizer state as it is now (``None``: layer not optimised).

    ``steps_taken`` (optimizer steps done so far, when the caller knows it) turns a missing AdamW state after
    the first step into an error instead of the first-step identity. ``muon_linearization`` picks the
    derivative of Muon's orthogonalisation (:func:`spectral_derivative`). Preconditioner tensors are float64
    for a float64 weight, float32 otherwise (the precision the statistics are computed in).
    """
    if muon_linearization not in MUON_LINEARIZATIONS:
        raise ValueError(
            f"muon_linearization must be one of {MUON_LINEARIZATIONS}, got {muon_linearization!r}"
        )
    inner = _inner_optimizer(optimizer)
    out: dict[str, LayerPreconditioner | None] = {}
    for layer in layers:
        group = _param_group(inner, layer.weight)
        dtype = torch.float64 if layer.weight.dtype == torch.float64 else torch.float32
        if group is None:
            out[layer.name] = None
        elif kind == "adamw":
            out[layer.name] = _adamw_layer(inner, group, layer, steps_taken, dtype)
        elif kind == "muon":
            out[layer.name] = _muon_layer(inner, group, layer, muon_linearization, dtype)
        elif kind == "sgd":
            out[layer.name] = _sgd_layer(inner, group, layer)
        else:
            raise ValueError(f"unknown preconditioner {kind!r}")
    if all(p is None for p in out.values()):
        raise OptimizerStateError("the optimizer holds none of the scored block Linear weights")
    return out
