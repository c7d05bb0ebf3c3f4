"""OPUS sketches: exactness of the factor paths and error on low-rank updates."""

import math
from dataclasses import fields

import pytest
import torch

from hf_select.opus.sketch import SKETCH_KINDS, CountSketch, TensorCountSketch, make_sketch
from hf_select.trainer_ext import OPUSConfig


def _pair(d_out, d_in, rank, gen, corr=0.8):
    """Two updates of the same rank with correlated factors (``rank=None``: dense Gaussian)."""
    if rank is None:
        a = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
        return a, corr * a + (1 - corr**2) ** 0.5 * torch.randn(
            d_out, d_in, generator=gen, dtype=torch.float64
        )
    g, x = (torch.randn(rank, d, generator=gen, dtype=torch.float64) for d in (d_out, d_in))
    g2, x2 = (
        corr * f + (1 - corr**2) ** 0.5 * torch.randn(f.shape, generator=gen, dtype=torch.float64)
        for f in (g, x)
    )
    return g.t() @ x, g2.t() @ x2


def _relative_sd(kind, a, b, dim, seeds=100):
    """RMS over hash seeds of (<S a, S b> - <a, b>) / (|a| |b|)."""
    exact = float((a * b).sum())
    errors = []
    for seed in range(seeds):
        sk = make_sketch(kind, a.shape[0], a.shape[1], dim, seed=seed)
        errors.append(float(sk.sketch_dense(a) @ sk.sketch_dense(b)) - exact)
    return math.sqrt(sum(e * e for e in errors) / len(errors)) / float(a.norm() * b.norm())


@pytest.mark.parametrize("kind", SKETCH_KINDS)
def test_sketch_outer_equals_the_dense_sketch_of_the_summed_outer_products(kind):
    sk = make_sketch(kind, 24, 40, 64, seed=3)
    g, x = torch.randn(5, 7, 24, dtype=torch.float64), torch.randn(5, 7, 40, dtype=torch.float64)
    dense = torch.einsum("bto,bti->boi", g, x)
    assert torch.allclose(sk.sketch_outer(g, x), sk.sketch_dense(dense), rtol=1e-9, atol=1e-9)


def test_tensor_sketch_hash_is_the_sum_of_row_and_column_hashes_and_chunks_tokens():
    sk = TensorCountSketch(3, 4, 5, seed=1, chunk_rows=2, buffer_elements=10)  # forces token chunks
    m = torch.zeros(3, 4, dtype=torch.float64)
    m[2, 1] = 1.0
    expected = torch.zeros(5, dtype=torch.float64)
    expected[int(sk.row_bucket[2] + sk.col_bucket[1]) % 5] = float(sk.row_sign[2] * sk.col_sign[1])
    assert torch.equal(sk.sketch_dense(m), expected)
    g, x = torch.randn(3, 9, 3, dtype=torch.float64), torch.randn(3, 9, 4, dtype=torch.float64)
    assert torch.allclose(sk.sketch_outer(g, x), sk.sketch_dense(torch.einsum("bto,bti->boi", g, x)))
    assert sk.row_bucket.numel() + sk.col_bucket.numel() == 3 + 4  # O(d_out + d_in) tables
    assert sk.outer_path == "dense"  # small layer: the GEMM path
    fft = TensorCountSketch(3, 4, 5, seed=1, chunk_rows=2, buffer_elements=10, outer_path="fft")
    assert torch.allclose(fft.sketch_outer(g, x), sk.sketch_outer(g, x))
    with pytest.raises(ValueError, match="outer_path"):
        TensorCountSketch(3, 4, 5, outer_path="gemm")


def test_sketches_are_unbiased_on_rank_one_updates():
    gen = torch.Generator().manual_seed(0)
    a, b = _pair(32, 48, 1, gen)
    exact = float((a * b).sum())
    for kind in SKETCH_KINDS:
        est = torch.tensor(
            [
                float(s.sketch_dense(a) @ s.sketch_dense(b))
                for s in (make_sketch(kind, 32, 48, 256, seed=i) for i in range(300))
            ],
            dtype=torch.float64,
        )
        assert abs(float(est.mean()) - exact) < 4 * float(est.std()) / 300**0.5 + 1e-9, kind


def test_default_sketch_error_does_not_depend_on_rank():
    """Rank-1, rank-4 and dense updates: the default sketch stays within the rank-free bound sqrt(11 / m)
    (TensorSketch, degree 2) and within 2x of a plain CountSketch of the same size; the factored grid does not
    (relative SD ~0.32 on rank-1 updates at m = 512, vs 0.05 for a plain CountSketch)."""
    default = next(f.default for f in fields(OPUSConfig) if f.name == "sketch_kind")
    dim, gen = 512, torch.Generator().manual_seed(0)
    bound = math.sqrt(11 / dim)
    for rank in (1, 4, None):
        pairs = [_pair(64, 96, rank, gen) for _ in range(2)]
        mine = sum(_relative_sd(default, a, b, dim) for a, b in pairs) / 2
        plain = sum(_relative_sd("countsketch", a, b, dim) for a, b in pairs) / 2
        assert mine < bound and mine < 2.0 * plain, (rank, mine, plain)
    a, b = _pair(64, 96, 1, gen)
    assert _relative_sd("factored", a, b, dim) > bound  # the grid sketch's rank-1 error


def test_make_sketch_rejects_unknown_kinds_and_bad_dims():
    with pytest.raises(ValueError, match="sketch kind"):
        make_sketch("gaussian", 4, 4, 8)
    with pytest.raises(ValueError, match=">= 1"):
        CountSketch(4, 4, 0)
    with pytest.raises(ValueError, match="sketch_kind"):
        OPUSConfig(output_dir="/tmp/x", sketch_kind="gaussian", report_to="none")
