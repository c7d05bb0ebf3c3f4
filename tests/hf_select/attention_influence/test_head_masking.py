import sys

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

from hf_select.attention_influence.head_masking import causal_running_mean, mask_heads
from hf_select.model_adapter import get_model_adapter
from hf_select.testing import FAMILIES, tiny_model
from hf_select.token_loss import final_hidden_states, prepare_model_inputs

REF_HEADS: dict[int, list[int]] = {}


def _uniform_reference(module, query, key, value, attention_mask, **kwargs):
    """Hand-written masked attention: the family's eager attention, then the masked heads' weights are
    replaced by 1 / (number of positions the mask allows)."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    out, _ = eager(module, query, key, value, attention_mask, **kwargs)
    layer = module._ref_layer
    allowed = (attention_mask == 0).float()  # [B, 1, Tq, Tk] additive mask from the eager mask function
    weights = allowed / allowed.sum(-1, keepdim=True).clamp(min=1)
    groups = query.shape[1] // key.shape[1]
    out = out.clone()
    for head in REF_HEADS.get(layer, []):
        out[:, :, head] = (weights[:, 0] @ value[:, head // groups].float()).to(out.dtype)
    return out, None


AttentionInterface.register("hf_select_test_uniform", _uniform_reference)
ALL_MASK_ATTENTION_FUNCTIONS.register("hf_select_test_uniform", ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def _reference_model(family, heads):
    model = tiny_model(family, attn_implementation="hf_select_test_uniform")
    for i, attn in enumerate(get_model_adapter(model).attention_modules):
        attn._ref_layer = i
    REF_HEADS.clear()
    for layer, head in heads:
        REF_HEADS.setdefault(layer, []).append(head)
    return model


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(4, 300, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding
    ids[1, 6:] = 0
    return ids, mask


@pytest.mark.parametrize("family", FAMILIES)
def test_masked_equals_hand_written_uniform_attention(family):
    heads = [(0, 1), (1, 2), (1, 3)]  # heads 2 and 3 share a KV head (GQA) where the family has it
    ids, mask = _batch()
    model = tiny_model(family, attn_implementation="eager")
    plain = final_hidden_states(model, input_ids=ids, attention_mask=mask)
    with mask_heads(model, heads):
        masked = final_hidden_states(model, input_ids=ids, attention_mask=mask)
    after = final_hidden_states(model, input_ids=ids, attention_mask=mask)
    reference_model = _reference_model(family, heads)
    reference_model.load_state_dict(model.state_dict())
    reference = final_hidden_states(reference_model, input_ids=ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(masked[real], reference[real], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(masked[real], plain[real], atol=1e-4)
    torch.testing.assert_close(after, plain, atol=0, rtol=0)  # exactly as before on exit


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3", "gpt_neox"])
def test_packed_equals_unpacked(family):
    model = tiny_model(family)
    torch.manual_seed(2)
    a, b = torch.randint(4, 300, (5,)), torch.randint(4, 300, (4,))
    packed_ids = torch.cat([a, b])[None]
    positions = torch.cat([torch.arange(5), torch.arange(4)])[None]
    heads = [(0, 0), (1, 3)]
    with mask_heads(model, heads):
        kwargs, _ = prepare_model_inputs(packed_ids, None, positions)
        packed = final_hidden_states(model, **kwargs)
        alone_a = final_hidden_states(model, input_ids=a[None])
        alone_b = final_hidden_states(model, input_ids=b[None])
    torch.testing.assert_close(packed[0, :5], alone_a[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[0, 5:], alone_b[0], atol=1e-5, rtol=1e-4)


def test_left_padding_equals_unpadded():
    model = tiny_model("qwen2")
    ids = torch.randint(4, 300, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)], 1)
    with mask_heads(model, [(1, 1)]):
        kwargs, _ = prepare_model_inputs(padded, mask)
        left = final_hidden_states(model, **kwargs)
        alone = final_hidden_states(model, input_ids=ids)
    torch.testing.assert_close(left[0, 3:], alone[0], atol=1e-5, rtol=1e-4)


def test_running_mean_by_hand():
    values = torch.tensor([[1.0, 3.0, 5.0, 7.0, 100.0, 2.0]])[..., None]
    mask = torch.tensor([[1, 1, 1, 1, 0, 1]])
    positions = torch.tensor([[0, 1, 0, 1, 2, 3]])
    out = causal_running_mean(values, mask, positions)[0, :, 0]
    torch.testing.assert_close(out, torch.tensor([1.0, 2.0, 5.0, 6.0, 6.0, 14 / 3]))


def test_bad_heads_and_models_get_clear_errors():
    model = tiny_model("llama")
    with pytest.raises(IndexError, match="layer 5 out of range"), mask_heads(model, [(5, 0)]):
        pass
    with pytest.raises(IndexError, match="head 4 out of range"), mask_heads(model, [(0, 4)]):
        pass
    with pytest.raises(ValueError, match="pair"), mask_heads(model, [(0,)]):
        pass
    from transformers import T5Config, T5ForConditionalGeneration

    from hf_select.model_adapter import UnsupportedModelError

    t5 = T5ForConditionalGeneration(T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8))
    with pytest.raises(UnsupportedModelError), mask_heads(t5, [(0, 0)]):
        pass
