"""Tiny random models of every decoder family the conformance table covers (tests/hf_select/test_conformance.py),
and an independent attention-kernel reference of causal-uniform head masking.

Hidden size 32, 2 layers, 4 query heads over 2 KV heads where the family allows, vocabulary 320; sliding-window
families get a window of 8 so that the test sequences (up to 20 tokens) cross it.
"""

import contextlib
import functools

import pytest
import torch
import transformers

VOCAB = 320
WINDOW = 8

_BASE = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 512,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
# model_type -> extra config kwargs
CONFORMANCE_FAMILIES: dict[str, dict] = {
    "llama": {},
    "mistral": {"sliding_window": WINDOW},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": WINDOW},
    "qwen2": {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1},
    "qwen2_moe": {**_MOE, "shared_expert_intermediate_size": 32},
    "qwen3": {},
    "qwen3_moe": _MOE,
    "gemma": {},
    "gemma2": {"query_pre_attn_scalar": 8, "sliding_window": WINDOW},
    "gemma3_text": {"query_pre_attn_scalar": 8, "sliding_window": WINDOW},
    "gpt2": {
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "n_positions": 512,
        "num_key_value_heads": None,
        "head_dim": None,
    },
    "gpt_neox": {"rotary_pct": 0.5, "num_key_value_heads": None, "head_dim": None},
    "phi3": {},
    "olmo": {},
    "olmo2": {},
    "olmo3": {"sliding_window": WINDOW},
    "stablelm": {},
    "smollm3": {},
    "olmoe": {"num_experts": 4, "num_experts_per_tok": 2},
    "glm4": {},
    "exaone4": {"sliding_window": WINDOW, "sliding_window_pattern": 2},
    "granitemoe": {"num_local_experts": 4, "num_experts_per_tok": 2, "logits_scaling": 8.0},
    "granite": {"logits_scaling": 8.0},
    "cohere": {"logit_scale": 0.25},
    "cohere2": {"logit_scale": 0.25, "sliding_window": WINDOW},
    "gpt_oss": {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": WINDOW},
    "falcon_h1": {
        "lm_head_multiplier": 0.3,
        "mamba_d_ssm": 32,
        "mamba_n_heads": 4,
        "mamba_d_head": 8,
        "mamba_d_state": 8,
        "mamba_chunk_size": 16,
    },
    "qwen3_next": {
        **_MOE,
        "shared_expert_intermediate_size": 32,
        "linear_num_value_heads": 4,
        "linear_num_key_heads": 2,
        "linear_key_head_dim": 8,
        "linear_value_head_dim": 8,
        "layer_types": ["full_attention", "linear_attention"],
    },
    "llama4_text": {"num_local_experts": 2, "intermediate_size_mlp": 64, "attention_chunk_size": WINDOW},
    "gemma3n_text": {
        "layer_types": ["sliding_attention", "full_attention"],
        "num_kv_shared_layers": 0,
        "sliding_window": WINDOW,
        "hidden_size_per_layer_input": 8,
        "vocab_size_per_layer_input": VOCAB,
        "laurel_rank": 4,
        "altup_num_inputs": 2,
        "activation_sparsity_pattern": [0.0, 0.0],
    },
}
# families whose kernels need eager attention (sdpa refuses: soft-capped scores, attention sinks)
EAGER = {"gemma2", "gpt_oss"}


def build_family(model_type: str, seed: int = 0, attn_implementation: str | None = None, **overrides):
    """A tiny random causal LM of ``model_type`` in eval mode (float32); skips when transformers lacks it.

    Built once per argument set and shared: callers that train or change the model take a ``copy.deepcopy``.
    """
    return _build(model_type, seed, attn_implementation, tuple(sorted(overrides.items())))


@functools.cache
def _build(model_type: str, seed: int, attn_implementation: str | None, overrides: tuple):
    overrides = dict(overrides)
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers.__version__} has no {model_type!r} family")
    kwargs = {**_BASE, **CONFORMANCE_FAMILIES[model_type], **overrides}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    config = transformers.AutoConfig.for_model(model_type, **kwargs)
    implementation = attn_implementation or ("eager" if model_type in EAGER else "sdpa")
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=implementation)
    return model.eval()


class UniformAttentionReference:
    """An attention function (registered with transformers' ``AttentionInterface``) that runs the model's own
    kernel and then overwrites the chosen heads' outputs with uniform attention over exactly the keys the
    layer's own mask allows (causal, sliding window, packed documents, padding): the independent reference
    for :func:`hf_select.mask_heads`. Heads: ``{layer: [query heads]}``.
    """

    def __init__(self, model, heads: dict[int, list[int]], attention_modules):
        import sys

        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        self.heads = heads
        self.layer_of = {id(m): i for i, m in enumerate(attention_modules)}
        implementation = model.config._attn_implementation
        self.kernel = (
            (lambda module: sys.modules[type(module).__module__].eager_attention_forward)
            if implementation == "eager"
            else (lambda module: ALL_ATTENTION_FUNCTIONS[implementation])
        )
        self.implementation = implementation

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        output, weights = self.kernel(module)(module, query, key, value, attention_mask, **kwargs)
        heads = self.heads.get(self.layer_of.get(id(module)), [])
        if not heads:
            return output, weights
        q_len, k_len = query.shape[2], key.shape[2]
        if attention_mask is None:
            allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
            allowed = allowed.expand(query.shape[0], q_len, k_len)
        else:
            mask = attention_mask[:, 0, :, :k_len]
            allowed = mask if mask.dtype == torch.bool else mask == 0
        uniform = allowed.float() / allowed.float().sum(-1, keepdim=True).clamp(min=1)
        group = query.shape[1] // key.shape[1]
        output = output.clone()
        for head in heads:
            output[:, :, head] = torch.einsum("bqk,bkd->bqd", uniform, value[:, head // group].float()).to(
                output.dtype
            )
        return output, weights


@contextlib.contextmanager
def uniform_attention_reference(model, heads):
    """Inside the block, ``model`` gives ``heads`` (``(layer, head)`` pairs) uniform attention through its own
    attention-kernel path (see :class:`UniformAttentionReference`)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    from hf_select.model_adapter import get_model_adapter

    adapter = get_model_adapter(model)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    reference = UniformAttentionReference(model, by_layer, adapter.attention_modules)
    original = model.config._attn_implementation
    name = "conformance_uniform_reference"
    AttentionInterface.register(name, reference)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])
    model.set_attn_implementation(name)
    try:
        yield reference
    finally:
        model.set_attn_implementation(original)
