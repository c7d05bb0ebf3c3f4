import pytest
import torch
from datasets import Dataset

from hf_select.packing import pack_documents
from hf_select.slm.reference_losses import compute_reference_losses
from hf_select.testing import TINY_VOCAB, tiny_model
from hf_select.token_loss import per_token_loss


def _rows():
    gen = torch.Generator().manual_seed(0)
    docs = [torch.randint(4, TINY_VOCAB, (n,), generator=gen).tolist() for n in (5, 9, 3, 12, 7, 4, 6, 2)]
    rows = pack_documents(docs, max_length=14)
    rows.pop("num_documents")
    return rows


def test_reference_losses_match_a_forward_on_each_row_alone():
    ref = tiny_model("llama", seed=1)
    rows = _rows()
    assert len({len(r) for r in rows["input_ids"]}) > 1  # padding inside the map batches
    out = compute_reference_losses(Dataset.from_dict(rows), ref, batch_size=3, with_entropy=True)
    for row in out:
        ids = torch.tensor([row["input_ids"]])
        expected, mask = per_token_loss(ref, ids, position_ids=torch.tensor([row["position_ids"]]))
        got = torch.tensor(row["ref_loss"])
        assert got.shape == ids.shape[1:]
        torch.testing.assert_close(got, expected[0], atol=1e-5, rtol=1e-5)
        assert (got[~mask[0]] == 0).all()
        # entropy of the predicting distribution, by hand
        logits = ref(input_ids=ids, position_ids=torch.tensor([row["position_ids"]]), use_cache=False).logits[
            0
        ]
        p = logits.float().softmax(-1)
        hand = torch.zeros(ids.shape[1])
        hand[1:] = -(p * p.log()).sum(-1)[:-1]
        hand[~mask[0]] = 0
        torch.testing.assert_close(torch.tensor(row["ref_entropy"]), hand, atol=1e-4, rtol=1e-4)


def test_float16_storage_and_rows_without_positions():
    ref = tiny_model("llama", seed=1)
    rows = {"input_ids": [[5, 6, 7, 8, 9], [10, 11, 12]]}
    full = compute_reference_losses(Dataset.from_dict(rows), ref)
    half = compute_reference_losses(Dataset.from_dict(rows), ref, storage_dtype="float16")
    assert half.features["ref_loss"].feature.dtype == "float16"
    for a, b in zip(full["ref_loss"], half["ref_loss"]):
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-3, atol=1e-3)
    assert full["ref_loss"][0][0] == 0.0 and full["ref_loss"][0][1] > 0
    with pytest.raises(ValueError, match="storage_dtype"):
        compute_reference_losses(Dataset.from_dict(rows), ref, storage_dtype="int8")
    with pytest.raises(ValueError, match="input_ids"):
        compute_reference_losses(Dataset.from_dict({"text": ["a"]}), ref)


def test_cache_fingerprint_depends_on_the_reference_weights():
    rows = Dataset.from_dict({"input_ids": [[5, 6, 7, 8, 9]]})
    a = compute_reference_losses(rows, tiny_model("llama", seed=1))
    b = compute_reference_losses(rows, tiny_model("llama", seed=2))
    assert a._fingerprint != b._fingerprint
    assert a["ref_loss"] != b["ref_loss"]
