"""Sketches of per-layer gradient matrices for OPUS (arXiv 2602.05400): inner products from a few thousand numbers.

OPUS compresses every candidate's per-layer update ``u = sum_t g_t x_t^T`` (``d_out x d_in``) to ``m`` numbers so
that inner products between candidates (the redundancy term) and with the proxy gradient stay cheap. Three
CountSketches share one interface (``dim``, ``sketch_outer(grads, inputs)``, ``sketch_dense(matrices)``), and all
are unbiased (``E[<S A, S B>] = <A, B>``):

- :class:`TensorCountSketch` (``kind="tensor"``, the default): entry ``(r, c)`` goes to bucket
  ``(h_r(r) + h_c(c)) mod m`` with sign ``s_r(r) s_c(c)`` (Pham & Pagh's TensorSketch). Tables of
  ``d_out + d_in`` entries; the sketch of an outer product is the circular convolution of the two vectors'
  CountSketches, computed with one FFT per factor, so ``sum_t g_t x_t^T`` is never formed. Any two distinct
  entries collide with probability ``1/m`` whether or not they share a row, so the error does not depend on
  the rank of the update: its variance is at most ``11 ||A||^2 ||B||^2 / m`` for every ``A, B`` (Avron, Nguyen
  & Woodruff 2014, degree 2). Measured (``benchmarks/opus_sketch_error.py``, relative SD of
  ``<S A, S B>`` over ``|A||B|``, m = 8192, 256 x 1024): rank 1 0.021, rank 4 0.015, dense 0.013, against a
  plain CountSketch's 0.014 / 0.015 / 0.015; on SmolLM2-135M per-sample ``up_proj`` updates of 64-token windows
  (effective rank ~24) 0.0125 against 0.0113.
- :class:`FactoredCountSketch` (``kind="factored"``): a product of a row and a column CountSketch into an
  ``m_r x m_c`` grid. Cheapest (two scatter-adds and one ``m_r x m_c`` matrix product per row) but two entries of
  the same row collide with probability ``1/m_c ~ 1/sqrt(m)``: on a rank-1 update ``g x^T`` the estimate is the
  product of a ``m_r``- and a ``m_c``-bucket estimate, relative SD ~ ``sqrt(2 / sqrt(m))`` against
  ``sqrt(1/m)`` for a plain CountSketch. Measured at m = 8192: rank 1 0.164, rank 4 0.080, dense 0.016;
  SmolLM2 per-sample updates 0.040 (3.2x the TensorSketch). Only dense, high-rank updates average this out;
  per-sample updates of a short window are low rank, so it is not the default.
- :class:`CountSketch` (``kind="countsketch"``): independent bucket and sign per entry (tables of
  ``d_out * d_in``); the reference the others are measured against. ``sketch_outer`` forms the dense matrix.
"""

from __future__ import annotations

import copy
import math

import torch

SKETCH_KINDS = ("tensor", "factored", "countsketch")


def split_sketch_dim(dim: int, d_out: int, d_in: int) -> tuple[int, int]:
    """Grid ``(m_r, m_c)`` with ``m_r * m_c <= dim``, shaped like the matrix (``m_r / m_c ~ d_out / d_in``)."""
    if dim < 1:
        raise ValueError(f"sketch dimension must be >= 1, got {dim}")
    m_r = round(math.sqrt(dim * d_out / d_in))
    m_r = max(1, min(m_r, d_out, dim))
    m_c = max(1, min(dim // m_r, d_in))
    return m_r, m_c


def _project(vectors: torch.Tensor, bucket: torch.Tensor, sign: torch.Tensor, size: int) -> torch.Tensor:
    """CountSketch of the last dimension: ``[..., d] -> [..., size]``."""
    out = vectors.new_zeros(*vectors.shape[:-1], size)
    return out.index_add_(-1, bucket, vectors * sign.to(vectors.dtype))


def _tables(n: int, size: int, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    bucket = torch.randint(size, (n,), generator=gen).to(device)
    sign = (torch.randint(2, (n,), generator=gen) * 2 - 1).float().to(device)
    return bucket, sign


class FactoredCountSketch:
    """CountSketch of ``d_out x d_in`` matrices into an ``m_r x m_c`` grid (``m_r * m_c <= dim``).

    Entry ``(r, c)`` goes to bucket ``(h_r(r), h_c(c))`` with sign ``s_r(r) s_c(c)``; the sketch of
    ``sum_t g_t x_t^T`` is ``sum_t (S_r g_t)(S_c x_t)^T``. Its error grows as the update's rank falls (see the
    module docstring): prefer :class:`TensorCountSketch`.

    Args:
        d_out: rows of the sketched matrices (output features of the layer).
        d_in: columns (input features).
        dim: target sketch size ``m``.
        seed: the hash functions; every process must use the same seed for comparable sketches.
        device: where the hash tables live.
    """

    kind = "factored"
    forms_dense = False  # sketch_outer never builds the per-sample matrices

    def __init__(self, d_out: int, d_in: int, dim: int, seed: int = 0, device: torch.device | str = "cpu"):
        self.d_out, self.d_in = d_out, d_in
        self.m_r, self.m_c = split_sketch_dim(dim, d_out, d_in)
        gen = torch.Generator().manual_seed(seed)
        self.row_bucket = torch.randint(self.m_r, (d_out,), generator=gen).to(device)
        self.col_bucket = torch.randint(self.m_c, (d_in,), generator=gen).to(device)
        self.row_sign = (torch.randint(2, (d_out,), generator=gen) * 2 - 1).float().to(device)
        self.col_sign = (torch.randint(2, (d_in,), generator=gen) * 2 - 1).float().to(device)

    @property
    def dim(self) -> int:
        return self.m_r * self.m_c

    def row_block(self, start: int, stop: int) -> FactoredCountSketch:
        """The sketch restricted to rows ``start:stop``: sketches of its matrices sum to the full sketch."""
        block = copy.copy(self)
        block.d_out = stop - start
        block.row_bucket, block.row_sign = self.row_bucket[start:stop], self.row_sign[start:stop]
        return block

    _project = staticmethod(_project)

    def sketch_outer(self, grads: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Sketch of ``sum_t grads[..., t, :]^T inputs[..., t, :]`` without forming it.

        Args:
            grads: ``[batch, tokens, d_out]`` (output gradients).
            inputs: ``[batch, tokens, d_in]`` (layer inputs).

        Returns:
            ``[batch, m_r * m_c]``.
        """
        a = _project(grads, self.row_bucket, self.row_sign, self.m_r)
        b = _project(inputs, self.col_bucket, self.col_sign, self.m_c)
        return torch.einsum("btr,btc->brc", a, b).reshape(grads.shape[0], -1)

    def sketch_dense(self, matrices: torch.Tensor) -> torch.Tensor:
        """Sketch of dense ``[..., d_out, d_in]`` matrices: ``[..., m_r * m_c]`` (same hash as sketch_outer)."""
        cols = _project(matrices, self.col_bucket, self.col_sign, self.m_c)  # [..., d_out, m_c]
        rows = _project(cols.transpose(-1, -2), self.row_bucket, self.row_sign, self.m_r)
        return rows.transpose(-1, -2).reshape(*matrices.shape[:-2], -1)


class _FlatHashSketch:
    """Shared dense path: a flat bucket/sign table over the ``d_out * d_in`` entries."""

    dim: int

    def _flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def sketch_dense(self, matrices: torch.Tensor) -> torch.Tensor:
        """Sketch of dense ``[..., d_out, d_in]`` matrices: ``[..., dim]``."""
        bucket, sign = self._flat()
        return _project(matrices.flatten(-2), bucket, sign, self.dim)


class TensorCountSketch(_FlatHashSketch):
    """TensorSketch of ``d_out x d_in`` matrices into ``dim`` numbers with O(d_out + d_in) tables.

    Entry ``(r, c)`` goes to bucket ``(h_r(r) + h_c(c)) mod dim`` with sign ``s_r(r) s_c(c)``, so the sketch of
    ``g x^T`` is the circular convolution ``CS_r(g) * CS_c(x)``. The error does not depend on the update's rank
    (module docstring). ``sketch_outer`` has two exact paths to the same numbers: ``"fft"`` sums the products
    of the factors' FFTs over tokens and inverts once per row (never forms ``sum_t g_t x_t^T``; ``O(T m log m)``
    per row), ``"dense"`` forms each row's ``d_out x d_in`` matrix a few rows at a time (one GEMM,
    ``O(T d_out d_in)``) and scatters it with the flat table. ``"auto"`` (default) takes ``dense`` when
    ``d_out * d_in <= 24 m log2 m``: measured on one CPU thread, the GEMM path is 3.4x faster at
    ``d_out * d_in = 8 m log2 m`` (576 x 1536 at m = 8192) and 35x at ``0.6 m log2 m``. Computation runs in
    float64 when given float64, else float32.

    Args:
        d_out: rows of the sketched matrices (output features of the layer).
        d_in: columns (input features).
        dim: sketch size ``m``.
        seed: the hash functions; every process must use the same seed for comparable sketches.
        device: where the hash tables live.
        chunk_rows: rows transformed at a time by ``sketch_outer``.
        buffer_elements: bound on the ``[rows, tokens, dim]`` buffers of ``sketch_outer`` (tokens are chunked)
            and on the ``[rows, d_out, d_in]`` buffers of its dense path (rows are chunked).
        outer_path: ``"auto"``, ``"fft"`` or ``"dense"`` (see above).
    """

    kind = "tensor"

    def __init__(
        self,
        d_out: int,
        d_in: int,
        dim: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
        chunk_rows: int = 8,
        buffer_elements: int = 2**22,
        outer_path: str = "auto",
    ):
        if dim < 1:
            raise ValueError(f"sketch dimension must be >= 1, got {dim}")
        self.d_out, self.d_in, self.dim, self.chunk_rows = d_out, d_in, dim, chunk_rows
        self.buffer_elements = buffer_elements
        if outer_path not in ("auto", "fft", "dense"):
            raise ValueError(f"outer_path must be 'auto', 'fft' or 'dense', got {outer_path!r}")
        if outer_path == "auto":
            outer_path = "dense" if d_out * d_in <= 24 * dim * max(1.0, math.log2(dim)) else "fft"
        self.outer_path = outer_path

        gen = torch.Generator().manual_seed(seed)
        self.row_bucket, self.row_sign = _tables(d_out, dim, gen, device)
        self.col_bucket, self.col_sign = _tables(d_in, dim, gen, device)
        self._flat_tables = None

    @property
    def forms_dense(self) -> bool:
        """Whether ``sketch_outer`` builds the per-sample matrices (its GEMM path)."""
        return self.outer_path == "dense"

    def row_block(self, start: int, stop: int) -> TensorCountSketch:
        """The sketch restricted to rows ``start:stop`` (e.g. one expert of a fused ``[E * d_out, d_in]``
        weight): the sketches of the row blocks of a matrix sum to its sketch."""
        block = copy.copy(self)
        block.d_out = stop - start
        block.row_bucket, block.row_sign = self.row_bucket[start:stop], self.row_sign[start:stop]
        block._flat_tables = None
        return block

    def _flat(self):
        if self._flat_tables is None:
            bucket = (self.row_bucket[:, None] + self.col_bucket[None, :]) % self.dim
            sign = self.row_sign[:, None] * self.col_sign[None, :]
            self._flat_tables = (bucket.flatten(), sign.flatten())
        return self._flat_tables

    def sketch_outer(self, grads: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Sketch of ``sum_t grads[i, t, :]^T inputs[i, t, :]`` for every row ``i``: ``[batch, dim]``.

        Args:
            grads: ``[batch, tokens, d_out]`` (output gradients).
            inputs: ``[batch, tokens, d_in]`` (layer inputs).
        """
        dtype = torch.float64 if grads.dtype == torch.float64 else torch.float32
        rows, tokens = grads.shape[:2]
        if self.outer_path == "dense":
            step = max(1, min(rows, self.buffer_elements // max(1, self.d_out * self.d_in)))
            return torch.cat(
                [
                    self.sketch_dense(
                        torch.einsum(
                            "bto,bti->boi", grads[r0 : r0 + step].to(dtype), inputs[r0 : r0 + step].to(dtype)
                        )
                    )
                    for r0 in range(0, rows, step)
                ]
            )
        row_step = max(1, min(rows, self.chunk_rows))
        token_step = max(1, self.buffer_elements // (row_step * self.dim))
        out = []
        for r0 in range(0, rows, row_step):
            spectrum = None
            for t0 in range(0, tokens, token_step):
                g = grads[r0 : r0 + row_step, t0 : t0 + token_step].to(dtype)
                x = inputs[r0 : r0 + row_step, t0 : t0 + token_step].to(dtype)
                a = torch.fft.rfft(_project(g, self.row_bucket, self.row_sign, self.dim), dim=-1)
                b = torch.fft.rfft(_project(x, self.col_bucket, self.col_sign, self.dim), dim=-1)
                part = (a * b).sum(-2)
                spectrum = part if spectrum is None else spectrum + part
            out.append(torch.fft.irfft(spectrum, n=self.dim, dim=-1))
        return torch.cat(out)


class CountSketch(_FlatHashSketch):
    """Plain CountSketch: an independent bucket and sign per entry (tables of ``d_out * d_in``).

    The reference of the other sketches' error; ``sketch_outer`` forms the dense per-row matrices.
    """

    kind = "countsketch"
    forms_dense = True

    def __init__(self, d_out: int, d_in: int, dim: int, seed: int = 0, device: torch.device | str = "cpu"):
        if dim < 1:
            raise ValueError(f"sketch dimension must be >= 1, got {dim}")
        self.d_out, self.d_in, self.dim = d_out, d_in, dim
        gen = torch.Generator().manual_seed(seed)
        self._tables = _tables(d_out * d_in, dim, gen, device)

    def _flat(self):
        return self._tables

    def row_block(self, start: int, stop: int) -> CountSketch:
        """The sketch restricted to rows ``start:stop``: sketches of its matrices sum to the full sketch."""
        block = copy.copy(self)
        block.d_out = stop - start
        bucket, sign = self._tables
        block._tables = (bucket[start * self.d_in : stop * self.d_in], sign[start * self.d_in : stop * self.d_in])
        return block

    def sketch_outer(self, grads: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Sketch of ``sum_t grads[i, t, :]^T inputs[i, t, :]`` (dense per-row matrices): ``[batch, dim]``."""
        return self.sketch_dense(torch.einsum("bto,bti->boi", grads, inputs))


def make_sketch(
    kind: str, d_out: int, d_in: int, dim: int, seed: int = 0, device: torch.device | str = "cpu"
) -> TensorCountSketch | FactoredCountSketch | CountSketch:
    """The sketch of ``kind`` (one of :data:`SKETCH_KINDS`) for ``d_out x d_in`` matrices."""
    classes = {"tensor": TensorCountSketch, "factored": FactoredCountSketch, "countsketch": CountSketch}
    if kind not in classes:
        raise ValueError(f"sketch kind must be one of {SKETCH_KINDS}, got {kind!r}")
    return classes[kind](d_out, d_in, dim, seed=seed, device=device)
