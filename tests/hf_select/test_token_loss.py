import pytest
import torch
import torch.nn.functional as F

from hf_select.testing import TINY_VOCAB, tiny_model
from hf_select.token_loss import document_losses, per_token_loss


def reference_losses(model, ids):
    """Hand computation: full logits of one unpadded sequence, shifted cross-entropy."""
    logits = model(ids[None], use_cache=False).logits[0].float()
    return F.cross_entropy(logits[:-1], ids[1:], reduction="none")


def test_matches_full_logits_for_every_family(family):
    model = tiny_model(family)
    torch.manual_seed(1)
    ids = torch.randint(4, TINY_VOCAB, (3, 12))
    losses, mask = per_token_loss(model, ids)
    assert losses.dtype == torch.float32
    assert not mask[:, 0].any() and mask[:, 1:].all()
    for row in range(3):
        torch.testing.assert_close(losses[row, 1:], reference_losses(model, ids[row]), atol=1e-5, rtol=1e-5)
        assert losses[row, 0] == 0


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_equals_unpacked(family, attn):
    model = tiny_model(family, attn_implementation=attn)
    torch.manual_seed(2)
    docs = [torch.randint(4, TINY_VOCAB, (n,)) for n in (5, 7, 4)]
    packed = torch.cat(docs)[None]
    positions = torch.cat([torch.arange(len(d)) for d in docs])[None]
    losses, mask = per_token_loss(model, packed, position_ids=positions)
    start = 0
    for doc in docs:
        expected = reference_losses(model, doc)
        torch.testing.assert_close(losses[0, start + 1 : start + len(doc)], expected, atol=1e-5, rtol=1e-5)
        assert not mask[0, start] and mask[0, start + 1 : start + len(doc)].all()
        start += len(doc)


def test_left_and_right_padding_agree(family):
    model = tiny_model(family)
    torch.manual_seed(3)
    a, b = torch.randint(4, TINY_VOCAB, (9,)), torch.randint(4, TINY_VOCAB, (5,))
    right = torch.zeros(2, 9, dtype=torch.long)
    right[0], right[1, :5] = a, b
    right_mask = (torch.arange(9) < torch.tensor([[9], [5]])).long()
    left = torch.zeros(2, 9, dtype=torch.long)
    left[0], left[1, 4:] = a, b
    left_mask = right_mask.flip(-1)
    r, rm = per_token_loss(model, right, right_mask)
    lft, lm = per_token_loss(model, left, left_mask)
    expected_b = reference_losses(model, b)
    torch.testing.assert_close(r[1, 1:5], expected_b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lft[1, 5:], expected_b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r[0], lft[0], atol=1e-5, rtol=1e-5)
    assert rm.sum() == lm.sum() == 8 + 4
    assert not lm[1, :5].any()


def test_packed_rows_with_padding():
    model = tiny_model("llama")
    torch.manual_seed(4)
    docs = [torch.randint(4, TINY_VOCAB, (n,)) for n in (4, 6)]
    ids = torch.zeros(2, 10, dtype=torch.long)
    ids[0] = torch.cat(docs)
    ids[1, :6] = docs[1]
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 0, 0, 0, 0]])
    attention = torch.tensor([[1] * 10, [1] * 6 + [0] * 4])
    losses, mask = per_token_loss(model, ids, attention, positions)
    torch.testing.assert_close(losses[0, 5:], losses[1, 1:6])
    assert mask.sum() == 3 + 5 + 5


def test_chunked_equals_unchunked():
    model = tiny_model("qwen3")
    ids = torch.randint(4, TINY_VOCAB, (4, 33))
    whole, _ = per_token_loss(model, ids, chunk_size=10_000)
    chunked, _ = per_token_loss(model, ids, chunk_size=7)
    torch.testing.assert_close(whole, chunked)


def test_labels_select_targets():
    model = tiny_model("llama")
    ids = torch.randint(4, TINY_VOCAB, (1, 8))
    labels = ids.clone()
    labels[0, :4] = -100
    losses, mask = per_token_loss(model, ids, labels=labels)
    assert mask[0].tolist() == [False] * 4 + [True] * 4
    full, _ = per_token_loss(model, ids)
    torch.testing.assert_close(losses[0, 4:], full[0, 4:])


def test_gemma_final_logit_softcapping_is_applied():
    model = tiny_model("gemma2", final_logit_softcapping=0.5)
    ids = torch.randint(4, TINY_VOCAB, (12,))
    losses, _ = per_token_loss(model, ids[None])
    torch.testing.assert_close(losses[0, 1:], reference_losses(model, ids), atol=1e-5, rtol=1e-5)


def test_document_losses_per_packed_document():
    losses = torch.tensor([[0.0, 1.0, 3.0, 0.0, 2.0, 0.0]])
    mask = torch.tensor([[False, True, True, False, True, False]])
    positions = torch.tensor([[0, 1, 2, 0, 1, 0]])
    out = document_losses(losses, mask, positions, attention_mask=torch.tensor([[1, 1, 1, 1, 1, 0]]))
    assert out["row"].tolist() == [0, 0]
    assert out["num_tokens"].tolist() == [2, 1]
    torch.testing.assert_close(out["mean_loss"], torch.tensor([2.0, 2.0]))


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\[batch, seq\]"):
        per_token_loss(tiny_model("llama"), torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("num_items", [None, 9])
def test_labelled_positions_loss_equals_the_transformers_loss_and_gradients(family, num_items):
    from hf_select.token_loss import labelled_positions_loss

    torch.manual_seed(4)
    ids = torch.randint(4, TINY_VOCAB, (2, 10))
    labels = ids.clone()
    labels[0, :6] = -100  # a masked prompt
    labels[1, 3:5] = -100
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4], list(range(10))])  # one packed row
    inputs = {"input_ids": ids, "labels": labels, "position_ids": positions}

    def loss_and_grads(compute):
        model = tiny_model(family).train()
        loss = compute(model)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    ours, our_grads = loss_and_grads(
        lambda m: labelled_positions_loss(m, inputs, kwargs.get("num_items_in_batch"))
    )
    theirs, their_grads = loss_and_grads(lambda m: m(**inputs, use_cache=False, **kwargs).loss)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=1e-5)
    assert len(our_grads) == len(their_grads)
    for a, b in zip(our_grads, their_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
