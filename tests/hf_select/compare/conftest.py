"""A tiny study for the compare tests: two domains of word salad over the tiny tokenizer's words, a 2-layer
Llama from scratch, 4 steps of 4 rows of 32 tokens."""

from __future__ import annotations

import json
import random

import pytest

from hf_select.compare import StudyConfig
from hf_select.testing import TINY_WORDS, tiny_tokenizer


def write_pool(path, per_domain: int = 40, seed: int = 0):
    rng = random.Random(seed)
    rows = []
    for d, domain in enumerate(("alpha", "beta")):
        words = TINY_WORDS[d::2]
        for i in range(per_domain):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 50)))
            rows.append({"text": text, "domain": domain, "url": f"https://{domain}.example/{i}", "ai_score": rng.random()})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def study_config(tmp_path):
    """``make(**overrides) -> StudyConfig`` of the tiny study writing under ``tmp_path / name``."""
    pool = write_pool(tmp_path / "pool.jsonl")
    tok_dir = tmp_path / "tokenizer"
    tiny_tokenizer().save_pretrained(tok_dir)

    def make(name: str = "study", **overrides) -> StudyConfig:
        fields = dict(
            output_dir=str(tmp_path / name), dataset_name_or_path=str(pool), tokenizer_name_or_path=str(tok_dir),
            model_config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64},
            heldout_documents_per_domain=4, proxy_documents_per_domain=4, seq_length=32, batch_size=4,
            max_steps=4, logging_steps=1, save_steps=2, seeds=[0, 1], learning_rate=1e-2, warmup_steps=0,
            arms=["baseline", {"type": "random", "fraction": 0.5, "mode": "filter"}],
        )  # fmt: skip
        fields.update(overrides)
        return StudyConfig(**fields)

    return make
