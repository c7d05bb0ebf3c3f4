import gc
import weakref

import pytest
import torch

from hf_select.attention_probe import attention_probe, probe_attention_rows
from hf_select.testing import tiny_model

# family -> overrides that make the edge cases bite on 20-token inputs
CASES = {
    "llama": {},
    "qwen2": {},  # grouped-query attention (4 query heads, 2 KV heads)
    "gemma2": {"sliding_window": 4, "attn_logit_softcapping": 0.5, "query_pre_attn_scalar": 2},
    "mistral": {"sliding_window": 4},
}


def _eager_attentions(family, ids, **kwargs):
    model = tiny_model(family, attn_implementation="eager", **CASES[family])
    with torch.no_grad():
        return model(ids, output_attentions=True, use_cache=False, **kwargs).attentions


@pytest.mark.parametrize("family", list(CASES))
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_probe_matches_eager_output_attentions(family, implementation):
    ids = torch.randint(4, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    rows = torch.tensor([0, 5, 11, 19])
    model = tiny_model(family, attn_implementation=implementation, **CASES[family])
    before = model.config._attn_implementation
    with torch.no_grad(), attention_probe(model, rows=rows) as probe:
        logits = model(ids, use_cache=False).logits
    assert model.config._attn_implementation == before
    with torch.no_grad():
        torch.testing.assert_close(logits, model(ids, use_cache=False).logits)  # outputs unchanged
    eager = _eager_attentions(family, ids)
    for layer, full in enumerate(eager):
        torch.testing.assert_close(probe.results[layer], full[:, :, rows].float(), atol=1e-6, rtol=1e-5)
    # argmax mode reads the same rows
    with torch.no_grad(), attention_probe(model, layers=[1], rows=rows, mode="argmax") as probe:
        model(ids, use_cache=False)
    assert set(probe.results) == {1}
    torch.testing.assert_close(probe.results[1], eager[1][:, :, rows].argmax(-1))


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_probe_per_batch_rows_with_left_padding_and_stop(family):
    """Left-padded rows (each with its own query positions) equal the rows probed alone."""
    model = tiny_model(family, **CASES[family])
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randint(4, 300, (12,), generator=gen), torch.randint(4, 300, (7,), generator=gen)
    ids = torch.zeros(2, 12, dtype=torch.long)
    mask = torch.zeros(2, 12, dtype=torch.long)
    ids[0], mask[0] = a, 1
    ids[1, 5:], mask[1, 5:] = b, 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    rows = [torch.tensor([3, 11]), torch.tensor([5 + 2, 5 + 6])]
    with torch.no_grad(), attention_probe(model, [1], rows, stop_after_last=True) as probe:
        model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
    alone_a = probe_attention_rows(model, a[None], 1, [3, 11])[0]
    alone_b = probe_attention_rows(model, b[None], 1, [2, 6])[0]
    torch.testing.assert_close(probe.results[1][0], alone_a, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(probe.results[1][1][:, :, 5:], alone_b, atol=1e-6, rtol=1e-5)
    assert float(probe.results[1][1][:, :, :5].abs().max()) == 0.0  # padding gets no attention


def test_probe_during_generate_records_the_prefill_only():
    model = tiny_model("qwen2")
    ids = torch.randint(4, 300, (1, 15), generator=torch.Generator().manual_seed(2))
    rows = torch.tensor([4, 14])
    with torch.no_grad(), attention_probe(model, [0], rows, prefill_only=True) as probe:
        model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False, pad_token_id=0
        )
    expected = _eager_attentions("qwen2", ids)[0][:, :, rows]
    torch.testing.assert_close(probe.results[0], expected, atol=1e-6, rtol=1e-5)


def test_probe_leaves_no_registry_entry_and_keeps_no_model_alive():
    """The registries do not grow across calls and a probed model can be freed."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    from hf_select.attention_influence.retrieval_heads import record_attention_argmax

    attention, masks = dict(AttentionInterface._global_mapping), dict(AttentionMaskInterface._global_mapping)
    refs = []
    for family in ("llama", "qwen2", "gemma2"):
        model = tiny_model(family)
        ids = torch.randint(4, 300, (1, 10))
        with torch.no_grad(), record_attention_argmax(model) as recorder:
            recorder.rows = torch.tensor([3])
            model(ids)
        probe_attention_rows(model, ids, 1, [2, 5])
        refs.append(weakref.ref(model))
        assert not any(hasattr(m, "_hf_select_attention_probe") for m in model.modules())
        del model, recorder
    gc.collect()
    assert AttentionInterface._global_mapping == attention
    assert AttentionMaskInterface._global_mapping == masks
    assert all(r() is None for r in refs)


def test_probe_errors():
    model = tiny_model("llama")
    with pytest.raises(IndexError, match="out of range"), attention_probe(model, layers=[7]):
        pass
    with pytest.raises(ValueError, match="mode"), attention_probe(model, mode="mean"):
        pass
    with attention_probe(model), pytest.raises(RuntimeError, match="already active"), attention_probe(model):
        pass
    assert model.config._attn_implementation == "sdpa"
