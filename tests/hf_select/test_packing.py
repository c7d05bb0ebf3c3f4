import pytest
import torch

from hf_select.packing import PackedCollator, pack_documents
from hf_select.testing import TINY_VOCAB, tiny_model
from hf_select.token_loss import per_token_loss


def test_rows_start_with_a_document_and_overflow_is_discarded():
    out = pack_documents([[1, 2, 3], [4, 5, 6, 7, 8], [9, 10], [11]], max_length=4)
    assert out["input_ids"] == [[1, 2, 3], [4, 5, 6, 7], [9, 10, 11]]
    assert out["labels"] == [[-100, 2, 3], [-100, 5, 6, 7], [-100, 10, -100]]
    assert out["position_ids"] == [[0, 1, 2], [0, 1, 2, 3], [0, 1, 0]]
    assert 8 not in sum(out["input_ids"], [])


def test_carry_mode_keeps_every_token():
    docs = [[1, 2, 3], [4, 5, 6, 7, 8], [9, 10]]
    out = pack_documents(docs, max_length=4, overflow="carry")
    assert sorted(sum(out["input_ids"], [])) == list(range(1, 11))
    assert all(len(r) <= 4 for r in out["input_ids"])


def test_document_labels_are_kept_and_untrainable_rows_dropped():
    out = pack_documents([[1, 2, 3], [4, 5]], max_length=8, labels=[[-100, -100, 3], [-100, -100]])
    assert out["labels"] == [[-100, -100, 3, -100, -100]]
    assert pack_documents([[1, 2]], max_length=8, labels=[[-100, -100]])["input_ids"] == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="overflow"):
        pack_documents([[1, 2]], 4, overflow="spill")
    with pytest.raises(ValueError, match="labels"):
        pack_documents([[1, 2]], 4, labels=[[1]])


def test_packed_batch_has_no_cross_document_attention():
    """Changing one document must not change the losses of another document in the same row."""
    model = tiny_model("llama")
    torch.manual_seed(0)
    docs = [torch.randint(4, TINY_VOCAB, (n,)).tolist() for n in (6, 5, 7)]
    rows = pack_documents(docs, max_length=32)
    batch = PackedCollator(pad_token_id=0)([{k: v[0] for k, v in rows.items()}])
    assert "attention_mask" not in batch
    base, mask = per_token_loss(model, batch["input_ids"], position_ids=batch["position_ids"])
    docs[0] = torch.randint(4, TINY_VOCAB, (6,)).tolist()
    changed = PackedCollator()([{k: v[0] for k, v in pack_documents(docs, 32).items()}])
    other, _ = per_token_loss(model, changed["input_ids"], position_ids=changed["position_ids"])
    torch.testing.assert_close(base[0, 6:], other[0, 6:])
    assert not torch.allclose(base[0, :6], other[0, :6])


def test_collator_pads_with_singleton_segments():
    rows = [
        {
            "input_ids": [5, 6, 7],
            "labels": [-100, 6, 7],
            "position_ids": [0, 1, 2],
            "ref_loss": [0.0, 1.0, 2.0],
        },
        {"input_ids": [8], "labels": [-100], "position_ids": [0], "ref_loss": [0.0]},
    ]
    batch = PackedCollator(pad_token_id=0, pad_columns=("ref_loss",))(rows)
    assert batch["labels"][1].tolist() == [-100, -100, -100]
    assert batch["position_ids"][1].tolist() == [0, 0, 0]
    assert batch["ref_loss"].dtype == torch.float32


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_training_forward_on_packed_rows_never_attends_across_documents(attn):
    """The Trainer's path, model(**batch) in training mode, on sdpa and eager: with the collator's default
    use_cache=False the logits of packed documents equal those of each document alone; without it (config
    use_cache=True) transformers builds a KV cache, skips the packed detection and documents leak."""
    model = tiny_model("llama", attn_implementation=attn).train()
    torch.manual_seed(1)
    docs = [torch.randint(4, TINY_VOCAB, (n,)).tolist() for n in (7, 5, 6)]
    rows = [{k: v[0] for k, v in pack_documents(docs, 32).items()}]
    with torch.no_grad():
        alone = torch.cat([model(input_ids=torch.tensor([d]), use_cache=False).logits[0] for d in docs])
        batch = PackedCollator()(rows)
        assert "attention_mask" not in batch and batch["use_cache"] is False
        packed = model(**batch).logits[0]
        leaky = model(**PackedCollator(use_cache=None)(rows)).logits[0]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
    assert (leaky[7:] - alone[7:]).abs().max() > 1e-3  # documents 2 and 3 saw document 1
