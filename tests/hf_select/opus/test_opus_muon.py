"""OPUS under torch.optim.Muon: predicted updates against central finite differences of a real Muon step
(benchmarks/opus_muon_fd.py), in float64 with Newton-Schulz run in float64."""

import importlib.util
from pathlib import Path

import pytest
import torch

from hf_select.opus.alignment import (
    build_preconditioners,
    candidate_statistics,
    layer_gradients,
    layer_weights,
    per_sample_updates,
    scored_statistics,
)
from hf_select.opus.sketch import TensorCountSketch

SCRIPT = Path(__file__).parents[3] / "benchmarks" / "opus_muon_fd.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("opus_muon_fd", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("one_thread")
def test_default_linearization_is_the_derivative_of_torch_muon(bench):
    """torch's quintic Newton-Schulz, 5 steps: the default is the exact first-order change of the step."""
    f = bench.figures("default", ns="default")
    assert f["median_cosine"] >= 0.95 and f["spearman"] >= 0.9
    assert f["median_relative_error"] < 1e-5  # magnitudes too: the (1 - mu^2) / lr' coefficients


@pytest.mark.usefixtures("one_thread")
def test_polar_linearization_matches_a_converged_newton_schulz(bench):
    """Where Newton-Schulz converges to the polar factor, the polar derivative is the step's derivative."""
    f = bench.figures("polar", ns="converged")
    assert f["median_cosine"] >= 0.95 and f["spearman"] >= 0.9
    assert f["median_relative_error"] < 1e-5


@pytest.mark.usefixtures("one_thread")
def test_plain_momentum_coefficient(bench):
    """Without Nesterov torch orthogonalises (1 - mu) g + mu B: the magnitude of u follows."""
    f = bench.figures("newton_schulz", ns="default", nesterov=False)
    assert f["median_relative_error"] < 1e-5


@pytest.mark.usefixtures("one_thread")
def test_statistics_in_the_singular_basis_equal_the_dense_updates(bench):
    """Float64 model under Muon: exact, sketched and in-backward statistics use the rotated factors."""
    model, layers, muon, (ids, labels, pos), n = bench.setup("default")
    pre = build_preconditioners(muon, layers, "muon")
    assert all(p.basis[0].dtype == torch.float64 for p in pre.values())
    grads = layer_gradients(model, layers, ids, labels, pos, n)
    align = torch.zeros(n, dtype=torch.float64)
    gram = torch.zeros(n, n, dtype=torch.float64)
    for lay in layers:
        x, gy = grads.inputs[lay.name], grads.output_grads[lay.name]
        u = bench.predicted_updates(pre[lay.name], per_sample_updates(gy[:n], x[:n])).flatten(1)
        target = per_sample_updates(gy[n:], x[n:]).sum(0).flatten()
        w_align, w_gram = layer_weights(lay)
        align += w_align * (u @ target)
        gram += w_gram * (u @ u.t())
    exact = candidate_statistics(grads, layers, pre, n)
    assert torch.allclose(exact.alignment, align, rtol=1e-9, atol=1e-14)
    assert torch.allclose(exact.gram, gram, rtol=1e-9, atol=1e-14)
    hooked = scored_statistics(model, layers, ids, labels, pos, n, pre)
    assert torch.allclose(hooked.alignment, align, rtol=1e-9, atol=1e-14)
    # sketched: the sketch of the updates and of the proxy gradient in the singular basis
    sketches = {lay.name: TensorCountSketch(lay.d_out, lay.d_in, 256, seed=i) for i, lay in enumerate(layers)}
    sketched = candidate_statistics(grads, layers, pre, n, sketches, exact_elements=0)
    ref = torch.zeros(n, dtype=torch.float64)
    for lay in layers:
        x, gy, p, sk = grads.inputs[lay.name], grads.output_grads[lay.name], pre[lay.name], sketches[lay.name]
        u, v = p.basis
        rotated = u.t() @ per_sample_updates(gy, x) @ v
        feats = sk.sketch_dense(p.apply(rotated[:n]))
        ref += layer_weights(lay)[0] * (feats @ sk.sketch_dense(rotated[n:].sum(0)))
    assert torch.allclose(sketched.alignment, ref, rtol=1e-8, atol=1e-14)


def test_config_names_a_bad_linearization(tmp_path):
    from hf_select.trainer_ext import OPUSConfig

    with pytest.raises(ValueError, match="muon_linearization must be one of"):
        OPUSConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, muon_linearization="frozen")
    assert OPUSConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True).muon_linearization == "newton_schulz"
