import dataclasses

import torch

from hf_select.fingerprint import fingerprint, model_fingerprint, weights_checksum


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))


def test_weights_checksum_changes_when_weights_change_in_place():
    model = _model()
    before = weights_checksum(model)
    assert weights_checksum(model) == before
    with torch.no_grad():
        model[0].weight[0, 0] += 1e-6
    assert weights_checksum(model) != before


def test_weights_checksum_sees_dtype_and_bf16():
    model = _model()
    before = weights_checksum(model)
    assert weights_checksum(model.to(torch.bfloat16)) != before


def test_fingerprint_hashes_every_dataclass_field():
    @dataclasses.dataclass
    class Config:
        a: int = 1
        b: str = "x"

    base = fingerprint(Config())
    assert fingerprint(Config(a=2)) != base
    assert fingerprint(Config(b="y")) != base
    assert fingerprint(Config()) == base


def test_model_fingerprint_holds_dtype_and_weights():
    payload = model_fingerprint(_model())
    assert payload["dtype"] == "torch.float32"
    assert len(payload["weights"]) == 32
