import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from hf_select.attention_influence.head_masking import mask_heads
from hf_select.attention_influence.scorer import AttentionInfluence, base_and_reference_losses, score_dataset
from hf_select.model_adapter import get_model_adapter
from hf_select.testing import tiny_model, tiny_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog. Pack my box.",
    "def add(a, b):\n    return a + b\n",
    "Key: value pairs hold answers; the answer is 42.",
    "",
]


def _hand_loss(model, ids):
    """Mean float32 cross-entropy of a one-document sequence from the full logits, labels shifted once."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
    return F.cross_entropy(logits[:-1], torch.tensor(ids[1:])).item()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_score_matches_hand_computation(family):
    model, tok = tiny_model(family, num_hidden_layers=3), tiny_tokenizer()
    heads = [(1, 0), (2, 3)]
    scorer = AttentionInfluence(model, tok, heads, max_length=64, batch_size=2)
    out = scorer({"text": TEXTS})
    for i, text in enumerate(TEXTS[:3]):
        ids = tok(text).input_ids
        base = _hand_loss(model, ids)
        with mask_heads(model, heads):
            ref = _hand_loss(model, ids)
        assert out["ai_num_tokens"][i] == len(ids) - 1
        assert out["ai_loss_base"][i] == pytest.approx(base, rel=1e-5)
        assert out["ai_loss_ref"][i] == pytest.approx(ref, rel=1e-5)
        assert out["ai_score"][i] == pytest.approx((ref - base) / base, rel=1e-4, abs=1e-6)
        assert not out["ai_too_short"][i]
    assert out["ai_too_short"][3] and math.isnan(out["ai_score"][3]) and out["ai_num_tokens"][3] == 0


def test_chunking_is_token_weighted_mean():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    ids = tok(TEXTS[0]).input_ids
    scorer = AttentionInfluence(model, tok, [(1, 1)], max_length=10, batch_size=3)
    out = scorer.score_token_ids([ids])
    chunks = [ids[i : i + 10] for i in range(0, len(ids), 10)]
    chunks = [c for c in chunks if len(c) >= 2]
    losses = [_hand_loss(model, c) for c in chunks]
    weights = [len(c) - 1 for c in chunks]
    expected = sum(w * x for w, x in zip(weights, losses)) / sum(weights)
    assert out["ai_num_tokens"][0] == sum(weights)
    assert out["ai_loss_base"][0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt_neox"])
def test_reusing_lower_layers_equals_two_full_passes(family):
    model = tiny_model(family, num_hidden_layers=4)
    torch.manual_seed(0)
    ids = torch.randint(4, 300, (3, 12))
    mask = torch.ones_like(ids)
    mask[2, 8:] = 0
    heads = [(2, 1), (3, 0)]
    fast = base_and_reference_losses(model, heads, ids, mask, reuse_lower_layers=True)
    calls = []
    attention0 = get_model_adapter(model).attention_modules[0]
    hook = attention0.register_forward_hook(lambda *a: calls.append(1))
    naive = base_and_reference_losses(model, heads, ids, mask, reuse_lower_layers=False)
    base_and_reference_losses(model, heads, ids, mask, reuse_lower_layers=True)
    hook.remove()
    assert calls == [1, 1, 1]  # naive: layer 0 twice; reuse: once
    for a, b in zip(fast, naive):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert "forward" not in vars(get_model_adapter(model).layers[0])  # stub removed


def test_dataset_map_and_fingerprint():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    ds = Dataset.from_dict({"body": TEXTS})
    scorer = AttentionInfluence(model, tok, [(1, 2)], max_length=32, text_column="body")
    scored = score_dataset(ds, scorer, batch_size=2)
    assert scored["ai_too_short"] == [False, False, False, True]
    other = AttentionInfluence(model, tok, [(1, 3)], max_length=32, text_column="body")
    assert scorer.fingerprint(ds) != other.fingerprint(ds)
    assert scored._fingerprint == scorer.fingerprint(ds)
    streamed = list(ds.to_iterable_dataset().map(scorer, batched=True, batch_size=2))
    assert [r["ai_num_tokens"] for r in streamed] == scored["ai_num_tokens"]


def test_bad_input_errors():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    scorer = AttentionInfluence(model, tok, [(0, 0)])
    with pytest.raises(KeyError, match="text column 'text'"):
        scorer({"content": ["a"]})
    with pytest.raises(TypeError, match="row 1 is NoneType"):
        scorer({"text": ["a b", None]})
    with pytest.raises(IndexError, match="head 9"):
        AttentionInfluence(model, tok, [(0, 9)])
    with pytest.raises(ValueError, match="at least one head"):
        AttentionInfluence(model, tok, [])


def test_instance_forward_wrappers_survive_the_lower_layer_stub():
    model = tiny_model("llama", num_hidden_layers=3)
    layer0 = get_model_adapter(model).layers[0]
    original = layer0.forward
    calls = []

    def wrapped(*args, **kwargs):  # what accelerate's device-map hooks install
        calls.append(1)
        return original(*args, **kwargs)

    layer0.forward = wrapped
    ids = torch.randint(4, 300, (1, 8))
    base_and_reference_losses(model, [(2, 0)], ids)
    assert vars(layer0)["forward"] is wrapped and calls == [1]
