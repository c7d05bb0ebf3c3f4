"""The main job's shared SmolLM2 pass (hf_select.demo.shared_pass): the reference losses it takes from
AttentionInfluence's base pass equal those of an independent reference pass
(cross_tokenizer_reference_losses), and the scores equal those of the plain scorer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import Dataset

from hf_select.attention_influence.scorer import AttentionInfluence
from hf_select.demo.shared_pass import ScoresWithReferenceLosses
from hf_select.slm.cross_tokenizer import cross_tokenizer_reference_losses
from hf_select.testing import char_tokenizer, tiny_model, tiny_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps.",
    "def add(a, b):\n    return a + b\n",
    "Pack my box with five dozen liquor jugs, then pack another box with more jugs for the party.",
    "2 + 2 = 4, 3 * 7 = 21.",
    "A much longer document that the scorer cuts into chunks: " + "the fox and the dog play in the sun. " * 6,
]


@pytest.mark.parametrize("split", ["exact", "uniform"])
def test_shared_reference_losses_equal_an_independent_reference_pass(split):
    model, ref_tok, student = tiny_model("llama", seed=5).eval(), tiny_tokenizer(with_bos=False), char_tokenizer()
    scorer = AttentionInfluence(model, ref_tok, [(1, 0)], max_length=72, batch_size=2, add_bos=True, min_tokens=1)
    shared = ScoresWithReferenceLosses(scorer, student, split=split)
    data = Dataset.from_dict({"text": TEXTS})
    out = data.map(shared, batched=True, batch_size=3, new_fingerprint=shared.fingerprint(data))
    independent = cross_tokenizer_reference_losses(TEXTS, model, ref_tok, student, batch_size=1, max_length=1024, split=split)
    lengths = [len(ids) for ids in scorer.encode(TEXTS)]
    assert lengths[-1] > 72 >= max(lengths[:-1])  # the last document is chunked: no shared value
    assert out["ref_loss"][-1] is None
    for got, want in zip(out["ref_loss"][:-1], independent[:-1]):
        assert got is not None and len(got) == len(want["ref_loss"])
        np.testing.assert_allclose(np.array(got), np.array(want["ref_loss"]), rtol=1e-5, atol=1e-5, equal_nan=True)
        # the EOS value comes from the last hidden state, not a pass over the EOS token
        assert not math.isnan(got[-1]) and np.isnan(got[0])
    # the scores are those of the plain scorer
    plain = data.map(scorer, batched=True, batch_size=3)
    np.testing.assert_allclose(out["ai_score"], plain["ai_score"], rtol=0, atol=0)


def test_the_shared_pass_needs_the_reference_encoding():
    model, tok = tiny_model("llama", seed=5).eval(), tiny_tokenizer(with_bos=False)
    with pytest.raises(ValueError, match="add_bos"):
        ScoresWithReferenceLosses(AttentionInfluence(model, tok, [(1, 0)]), char_tokenizer())
