import numpy as np
import pytest
import torch

from hf_select.packing import pack_documents
from hf_select.slm.cross_tokenizer import (
    cross_tokenizer_reference_losses,
    per_character_losses,
    project_token_losses,
)
from hf_select.testing import char_tokenizer, tiny_model, tiny_tokenizer


def test_projection_by_hand():
    # source tokens "ab" (loss 2) "cde" (loss 3); target tokens "a" "bcd" "e"
    projected = project_token_losses([2.0, 3.0], [(0, 2), (2, 5)], [(0, 1), (1, 4), (4, 5)])
    np.testing.assert_allclose(projected, [1.0, 1.0 + 2.0, 1.0])
    # special tokens (empty spans) give nothing and get NaN (no reference value)
    projected = project_token_losses([7.0, 2.0], [(0, 0), (0, 2)], [(0, 0), (0, 2), (2, 2)])
    np.testing.assert_allclose(projected, [np.nan, 2.0, np.nan])
    # an unscored source token (NaN) leaves its characters without a value; prefix losses split "cde" at 3
    projected = project_token_losses(
        [2.0, 3.0, np.nan], [(0, 2), (2, 5), (5, 6)], [(0, 3), (3, 5), (5, 6)], prefix_losses={(1, 3): 2.5}
    )
    np.testing.assert_allclose(projected, [2.0 + 2.5, 0.5, np.nan])
    with pytest.raises(ValueError, match="offsets"):
        per_character_losses([1.0], [(0, 1), (1, 2)], 2)


def test_projection_conserves_loss_per_character_span_between_two_real_tokenizers():
    bpe, chars = tiny_tokenizer(), char_tokenizer()
    text = "The quick brown fox jumps over the lazy dog. def add(a, b): return a + b"
    src = bpe(text, add_special_tokens=False, return_offsets_mapping=True)
    dst = chars(text, add_special_tokens=False, return_offsets_mapping=True)
    assert len(src.input_ids) < len(dst.input_ids)  # really different vocabularies
    losses = torch.rand(len(src.input_ids), generator=torch.Generator().manual_seed(0)).numpy() * 5
    projected = project_token_losses(losses, src.offset_mapping, dst.offset_mapping, len(text))
    assert projected.sum() == pytest.approx(losses.sum())
    # every source token's span is a union of character tokens: its loss is conserved exactly
    for loss, (start, end) in zip(losses, src.offset_mapping):
        inside = [i for i, (s, e) in enumerate(dst.offset_mapping) if s >= start and e <= end]
        assert projected[inside].sum() == pytest.approx(loss)


def test_cross_tokenizer_reference_losses_align_with_student_tokens_and_pack():
    ref = tiny_model("llama", seed=3)
    texts = ["Pack my box with five dozen liquor jugs.", "2 + 2 = 4, 3 * 7 = 21."]
    out = cross_tokenizer_reference_losses(texts, ref, tiny_tokenizer(), char_tokenizer(), batch_size=1)
    from hf_select.token_loss import per_token_loss

    for doc, text in zip(out, texts):
        assert len(doc["input_ids"]) == len(text) + 2  # BOS + characters + EOS
        assert len(doc["ref_loss"]) == len(doc["input_ids"])
        assert np.isnan(doc["ref_loss"][0]) and np.isfinite(doc["ref_loss"][1:]).all()  # BOS has no value
        # the total equals the reference's own loss on the document, its EOS included; the student's EOS gets
        # the reference's EOS loss
        ids = tiny_tokenizer()(text).input_ids + [tiny_tokenizer().eos_token_id]
        own = per_token_loss(ref, torch.tensor([ids])).losses[0]
        assert np.nansum(doc["ref_loss"]) == pytest.approx(float(own.sum()), rel=1e-5)
        assert doc["ref_loss"][-1] == pytest.approx(float(own[-1]), rel=1e-5)
    out = [dict(d, ref_loss=np.nan_to_num(d["ref_loss"]).tolist()) for d in out]
    rows = pack_documents(
        [d["input_ids"] for d in out], 32, columns={"ref_loss": [d["ref_loss"] for d in out]}
    )
    assert [len(r) for r in rows["ref_loss"]] == [len(r) for r in rows["input_ids"]]
    assert rows["ref_loss"][0] == out[0]["ref_loss"][:32]


def test_packing_cuts_extra_columns_like_the_ids():
    docs, values = [[1, 2, 3], [4, 5, 6, 7, 8]], [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7, 0.8]]
    out = pack_documents(docs, 4, columns={"ref_loss": values})
    assert out["ref_loss"] == [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7]]
    out = pack_documents(docs, 4, overflow="carry", columns={"ref_loss": values})
    # every kept token keeps its own value (values are id / 10)
    assert sum(out["ref_loss"], []) == pytest.approx([i / 10 for i in sum(out["input_ids"], [])])
    assert [len(r) for r in out["ref_loss"]] == [len(r) for r in out["input_ids"]]
    with pytest.raises(ValueError, match="ref_loss"):
        pack_documents(docs, 4, columns={"ref_loss": [[0.1], values[1]]})


def test_tokens_past_the_reference_window_get_nan_not_zero():
    """With ``max_length`` the reference scores a prefix only: every student token reaching past the last scored
    character (and the EOS of a truncated document) has no value, NaN, never 0 (which the top-k of an excess
    loss would select first)."""
    ref, ref_tok = tiny_model("llama", seed=3), tiny_tokenizer()
    text = "Pack my box with five dozen liquor jugs. " * 3
    out = cross_tokenizer_reference_losses([text], ref, ref_tok, char_tokenizer(), max_length=8)[0]
    ref_enc = ref_tok(text, add_special_tokens=False, return_offsets_mapping=True)
    scored_end = ref_enc.offset_mapping[6][1]  # BOS + 7 tokens fit: the first 7 real tokens are scored
    values = np.array(out["ref_loss"])
    assert np.isfinite(values[1 : 1 + scored_end]).all()
    assert np.isnan(values[1 + scored_end :]).all() and np.isnan(values[0])
    full = cross_tokenizer_reference_losses([text], ref, ref_tok, char_tokenizer())[0]["ref_loss"]
    np.testing.assert_allclose(values[1 : 1 + scored_end], full[1 : 1 + scored_end], rtol=1e-5)


def test_exact_split_uses_the_reference_prefix_probabilities():
    """Each reference token cut by a student boundary is split by ``-log P(prefix)``, ``P(prefix)`` summed by
    brute force over the reference vocabulary (every token whose decoded text starts with the prefix) from the
    reference's own next-token distribution; the pieces of a token sum to its loss."""
    ref, ref_tok, student = tiny_model("llama", seed=3), tiny_tokenizer(), char_tokenizer()
    text = "The quick brown fox jumps over the lazy dog."
    out = cross_tokenizer_reference_losses([text], ref, ref_tok, student, split="exact")[0]["ref_loss"]
    uniform = cross_tokenizer_reference_losses([text], ref, ref_tok, student, split="uniform")[0]["ref_loss"]
    ids = [ref_tok.bos_token_id] + ref_tok(text, add_special_tokens=False).input_ids
    offsets = [(0, 0)] + ref_tok(text, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
    with torch.no_grad():
        probs = torch.softmax(ref(torch.tensor([ids])).logits[0].double(), -1)
    texts = [ref_tok.decode([v]) for v in range(len(ref_tok))]
    special = set(ref_tok.all_special_ids)
    split_tokens = 0
    for t in range(1, len(ids)):
        start, end = offsets[t]
        assert texts[ids[t]] == text[start:end]
        loss = -float(torch.log(probs[t - 1, ids[t]]))
        previous = 0.0
        for b in range(start + 1, end + 1):  # the character student cuts inside the token, then its end
            prefix = text[start:b]
            mass = sum(float(probs[t - 1, v]) for v, s in enumerate(texts) if s.startswith(prefix) and v not in special)
            upto = -np.log(mass) if b < end else loss
            # student token b - 1 (after BOS: index b) holds the character text[b - 1]
            assert out[b] == pytest.approx(upto - previous, rel=1e-4, abs=1e-5), (t, prefix)
            previous = upto
        split_tokens += end - start > 1
        assert sum(out[start + 1 : end + 1]) == pytest.approx(loss, rel=1e-5)
        assert sum(uniform[start + 1 : end + 1]) == pytest.approx(loss, rel=1e-5)
    assert split_tokens >= 5
    assert not np.allclose(out[1:-1], uniform[1:-1], rtol=1e-3)
