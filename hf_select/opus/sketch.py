"""CountSketch of per-layer gradient matrices with hashing factored per row and per column (OPUS, arXiv 2602.05400).

OPUS compresses every candidate's per-layer update to a few thousand numbers so that inner products between
candidates (the redundancy term) and with the proxy gradient stay cheap. A plain CountSketch of a
``d_out x d_in`` matrix needs a bucket and a sign for every entry (tables of ``d_out * d_in``). Here the
hash is a product of two independent CountSketches, one over rows and one over columns: entry ``(r, c)``
goes to bucket ``(h_r(r), h_c(c))`` of an ``m_r x m_c`` grid with sign ``s_r(r) * s_c(c)``. The tables have
``d_out + d_in`` entries, inner products are preserved in expectation (``E[<S A, S B>] = <A, B>``), and the
sketch of an outer-product sum ``sum_t g_t x_t^T`` is ``sum_t (S_r g_t)(S_c x_t)^T``: two scatter-adds and
one small matrix product, never the ``d_out x d_in`` matrix.
"""

from __future__ import annotations

import math

import torch


def split_sketch_dim(dim: int, d_out: int, d_in: int) -> tuple[int, int]:
    """Grid ``(m_r, m_c)`` with ``m_r * m_c <= dim``, shaped like the matrix (``m_r / m_c ~ d_out / d_in``)."""
    if dim < 1:
        raise ValueError(f"sketch dimension must be >= 1, got {dim}")
    m_r = round(math.sqrt(dim * d_out / d_in))
    m_r = max(1, min(m_r, d_out, dim))
    m_c = max(1, min(dim // m_r, d_in))
    return m_r, m_c


class FactoredCountSketch:
    """CountSketch of ``d_out x d_in`` matrices into ``m_r * m_c <= dim`` numbers with O(d_out + d_in) tables.

    Args:
        d_out: rows of the sketched matrices (output features of the layer).
        d_in: columns (input features).
        dim: target sketch size ``m``.
        seed: the hash functions; every process must use the same seed for comparable sketches.
        device: where the hash tables live.
    """

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

    @staticmethod
    def _project(vectors: torch.Tensor, bucket: torch.Tensor, sign: torch.Tensor, size: int) -> torch.Tensor:
        """CountSketch of the last dimension: ``[..., d] -> [..., size]``."""
        out = vectors.new_zeros(*vectors.shape[:-1], size)
        return out.index_add_(-1, bucket, vectors * sign.to(vectors.dtype))

    def sketch_outer(self, grads: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Sketch of ``sum_t grads[..., t, :]^T inputs[..., t, :]`` without forming it.

        Args:
            grads: ``[batch, tokens, d_out]`` (output gradients).
            inputs: ``[batch, tokens, d_in]`` (layer inputs).

        Returns:
            ``[batch, m_r * m_c]``.
        """
        a = self._project(grads, self.row_bucket, self.row_sign, self.m_r)
        b = self._project(inputs, self.col_bucket, self.col_sign, self.m_c)
        return torch.einsum("btr,btc->brc", a, b).reshape(grads.shape[0], -1)

    def sketch_dense(self, matrices: torch.Tensor) -> torch.Tensor:
        """Sketch of dense ``[..., d_out, d_in]`` matrices: ``[..., m_r * m_c]`` (same hash as sketch_outer)."""
        cols = self._project(matrices, self.col_bucket, self.col_sign, self.m_c)  # [..., d_out, m_c]
        rows = self._project(cols.transpose(-1, -2), self.row_bucket, self.row_sign, self.m_r)
        return rows.transpose(-1, -2).reshape(*matrices.shape[:-2], -1)
