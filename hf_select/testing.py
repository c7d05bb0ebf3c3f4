"""Tiny random models of every supported family and an offline tokenizer, for tests and benchmarks.

Each model builds in well under a second on CPU and needs no Hub access.
"""

from __future__ import annotations

import functools
import re

import torch
import transformers
from transformers import PreTrainedTokenizerFast

TINY_VOCAB = 320
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2

# family -> (config class, extra kwargs). Grouped-query attention (4 query heads, 2 KV heads) wherever the
# family supports it.
_TINY_CONFIGS: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", {"num_key_value_heads": 2}),
    "mistral": ("MistralConfig", {"num_key_value_heads": 2, "sliding_window": None}),
    "qwen2": ("Qwen2Config", {"num_key_value_heads": 2}),
    "qwen3": ("Qwen3Config", {"num_key_value_heads": 2, "head_dim": 8}),
    "gemma2": ("Gemma2Config", {"num_key_value_heads": 2, "head_dim": 8, "query_pre_attn_scalar": 8}),
    "gemma3_text": (
        "Gemma3TextConfig",
        {"num_key_value_heads": 2, "head_dim": 8, "query_pre_attn_scalar": 8},
    ),
    "phi3": ("Phi3Config", {"num_key_value_heads": 2}),
    "olmo2": ("Olmo2Config", {"num_key_value_heads": 2}),
    "gpt2": ("GPT2Config", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 512}),
    "gpt_neox": ("GPTNeoXConfig", {"rotary_pct": 0.5}),
}
FAMILIES = tuple(_TINY_CONFIGS)

_LLAMA_LIKE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
}


def tiny_config(family: str, **overrides) -> transformers.PretrainedConfig:
    """Config of a tiny model of ``family`` (vocabulary 320, hidden 32, 2 layers, 4 query heads)."""
    class_name, extra = _TINY_CONFIGS[family]
    kwargs = {
        "vocab_size": TINY_VOCAB,
        "pad_token_id": PAD_ID,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
    }
    if family != "gpt2":
        kwargs.update(_LLAMA_LIKE)
    kwargs.update(extra)
    kwargs.update(overrides)
    return getattr(transformers, class_name)(**kwargs)


def tiny_model(family: str = "llama", seed: int = 0, attn_implementation: str = "sdpa", **overrides):
    """A randomly initialised tiny causal LM of ``family`` in eval mode (float32)."""
    config = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    if family in ("gemma2",) and attn_implementation == "sdpa":
        attn_implementation = "eager"  # sdpa cannot soft-cap attention logits
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    return model.eval()


TINY_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n"
    "The integral of x squared is x cubed over three. 2 + 2 = 4, 3 * 7 = 21. "
    "Key: value pairs hold answers; the answer is 42. URL: www.example.com\n\n"
)

# Distinct words of the tiny corpus: text made of them tokenises compactly with tiny_tokenizer().
TINY_WORDS = tuple(dict.fromkeys(re.findall(r"[a-z]+", TINY_CORPUS.lower())))


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer of printable ASCII and newline: a vocabulary unlike the BPE ones (for
    cross-tokenizer tests)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    alphabet = sorted(set("".join(chr(c) for c in range(32, 127)) + "\n"))
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *alphabet])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@functools.lru_cache(maxsize=4)
def tiny_tokenizer(vocab_size: int = 300, with_bos: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained offline on a few sentences, with pad/bos/eos/unk tokens (ids 0-3),
    small enough for the tiny models' vocabulary.

    With ``with_bos`` the post-processor prepends ``<s>`` to every encoding, like Llama tokenizers.
    """
    from .bpe import train_bpe_tokenizer

    return train_bpe_tokenizer([TINY_CORPUS] * 4, vocab_size, min_frequency=0, with_bos=with_bos)


def free_port() -> int:
    """A TCP port that is free on localhost now (for a torchrun rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_torchrun(script, *args, nproc: int = 2, env: dict | None = None, timeout: float = 300, cwd=None):
    """Run ``torchrun --nproc_per_node nproc script args`` (gloo on CPU) on a free port, one thread per process.

    Returns the ``CompletedProcess`` (text output captured); callers assert on ``returncode``.
    """
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    cmd += ["--master_port", str(free_port()), str(script), *map(str, args)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def enable_fsdp_on_cpu() -> None:
    """Let the Trainer's own FSDP path (accelerate's FSDP plugin) run on CPU under gloo, for tests.

    accelerate turns its FSDP plugin on only for accelerator devices (``MULTI_GPU``, ``MULTI_XPU``, ...); on
    CPU a ``TrainingArguments(fsdp=..., use_cpu=True)`` run silently falls back to DDP. This lifts that one gate:
    after ``AcceleratorState`` is built for a multi-process CPU run with an FSDP plugin, its distributed type
    becomes ``FSDP``. Everything after it -- ``fsdp2_prepare_model`` (``fully_shard`` per decoder layer),
    sharded optimizer state, gradient clipping, sharded checkpoints -- is accelerate's and the Trainer's own
    code. Call it before building the ``TrainingArguments`` in every process.
    """
    import accelerate.state
    from accelerate.utils import DistributedType

    state_cls = accelerate.state.AcceleratorState
    if getattr(state_cls.__init__, "_hf_select_cpu_fsdp", False):
        return
    original = state_cls.__init__

    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    __init__._hf_select_cpu_fsdp = True
    state_cls.__init__ = __init__
