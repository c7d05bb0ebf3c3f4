import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hf_select.packing import pack_documents
from hf_select.slm.cross_tokenizer import (
    cross_tokenizer_reference_losses,
    per_character_losses,
    project_token_losses,
)
from hf_select.testing import tiny_model, tiny_tokenizer


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer: a vocabulary unlike the BPE one."""
    alphabet = sorted(set("".join(chr(c) for c in range(32, 127)) + "\n"))
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *alphabet])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def test_projection_by_hand():
    # source tokens "ab" (loss 2) "cde" (loss 3); target tokens "a" "bcd" "e"
    projected = project_token_losses([2.0, 3.0], [(0, 2), (2, 5)], [(0, 1), (1, 4), (4, 5)])
    np.testing.assert_allclose(projected, [1.0, 1.0 + 2.0, 1.0])
    # special tokens (empty spans) get nothing and give nothing
    projected = project_token_losses([7.0, 2.0], [(0, 0), (0, 2)], [(0, 0), (0, 2), (2, 2)])
    np.testing.assert_allclose(projected, [0.0, 2.0, 0.0])
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
    for doc, text in zip(out, texts):
        assert len(doc["input_ids"]) == len(text) + 2  # BOS + characters + EOS
        assert len(doc["ref_loss"]) == len(doc["input_ids"])
        assert doc["ref_loss"][0] == 0.0 and doc["ref_loss"][-1] == 0.0
    # the total equals the reference's own loss on the document (its EOS loss is not computed)
    ids = tiny_tokenizer()(texts[0]).input_ids
    from hf_select.token_loss import per_token_loss

    own = per_token_loss(ref, torch.tensor([ids])).losses.sum()
    assert sum(out[0]["ref_loss"]) == pytest.approx(float(own), rel=1e-5)
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
