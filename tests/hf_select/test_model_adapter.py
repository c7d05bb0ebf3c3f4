import pytest
import torch
import torch.nn.functional as F
import transformers

from hf_select.model_adapter import UnsupportedModelError, get_model_adapter
from hf_select.testing import TINY_VOCAB, tiny_model


def capture(module, kind="input"):
    store = {}

    if kind == "input":
        handle = module.register_forward_pre_hook(lambda m, args: store.__setitem__("x", args[0].detach()))
    else:
        handle = module.register_forward_hook(lambda m, args, out: store.__setitem__("x", out.detach()))
    return store, handle


def test_head_counts(family):
    model = tiny_model(family)
    adapter = get_model_adapter(model)
    expected_kv = 4 if family in ("gpt2", "gpt_neox") else 2
    assert (adapter.num_layers, adapter.num_heads, adapter.num_kv_heads) == (2, 4, expected_kv)
    assert adapter.output_projections[0].weight.shape[-1 if family != "gpt2" else 0] == 4 * adapter.head_dim


def test_values_and_head_slices_line_up(family):
    """With one token, attention is the identity: head h's output slice IS the value of its KV head."""
    model = tiny_model(family)
    adapter = get_model_adapter(model)
    ids = torch.randint(4, TINY_VOCAB, (1, 1))
    for layer in range(adapter.num_layers):
        concat, h1 = capture(adapter.output_projections[layer], "input")
        values, h2 = capture(adapter.value_projections[layer], "output")
        with torch.no_grad():
            model(ids, use_cache=False)
        h1.remove()
        h2.remove()
        v = adapter.values_from_projection(values["x"])
        assert v.shape == (1, 1, adapter.num_kv_heads, adapter.head_dim)
        for head in range(adapter.num_heads):
            torch.testing.assert_close(
                concat["x"][0, 0, adapter.head_slice(head)], v[0, 0, adapter.kv_head_of(head)]
            )


def test_perturbing_one_head_changes_only_its_contribution(family):
    model = tiny_model(family)
    adapter = get_model_adapter(model)
    proj = adapter.output_projections[1]
    weight = proj.weight if family != "gpt2" else proj.weight.T  # GPT-2 Conv1D stores [in, out]
    ids = torch.randint(4, TINY_VOCAB, (2, 6))
    head = 2
    delta = torch.randn(2, 6, adapter.head_dim)
    outputs = {}

    def perturb(x):
        x = x.clone()
        x[..., adapter.head_slice(head)] += delta
        return x

    for name, fn in (("plain", None), ("perturbed", perturb)):
        handle = adapter.hook_output_projection_input(1, fn) if fn else None
        store, h = capture(proj, "output")
        with torch.no_grad():
            model(ids, use_cache=False)
        h.remove()
        if handle:
            handle.remove()
        outputs[name] = store["x"]
    expected = F.linear(delta, weight[:, adapter.head_slice(head)])
    torch.testing.assert_close(outputs["perturbed"] - outputs["plain"], expected, atol=1e-5, rtol=1e-4)


def test_unsupported_model_names_the_class():
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        is_decoder=True,
    )
    model = transformers.BertLMHeadModel(config)
    with pytest.raises(UnsupportedModelError, match="BertLMHeadModel.*Supported families"):
        get_model_adapter(model)


def test_check_head_out_of_range():
    adapter = get_model_adapter(tiny_model("llama"))
    with pytest.raises(IndexError, match="4 query heads"):
        adapter.check_head(0, 4)
    with pytest.raises(IndexError, match="2 layers"):
        adapter.check_head(2, 0)


def test_peft_wrapped_model_is_unwrapped():
    import peft

    model = peft.get_peft_model(
        tiny_model("llama"), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    adapter = get_model_adapter(model)
    assert adapter.num_heads == 4 and adapter.family == "llama"
