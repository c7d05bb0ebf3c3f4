"""Demo stage: detect the retrieval heads of the demo base model (AttentionInfluence, arXiv 2505.07293)."""

from __future__ import annotations

import html
from typing import Any

from transformers.utils import logging

from .context import DemoContext

logger = logging.get_logger(__name__)

TITLE = "Retrieval heads of the base model (AttentionInfluence)"


def load_base(ctx: DemoContext):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(ctx.base_model_dir, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(ctx.tokenizer_dir)
    return model, tokenizer


def proxy_samples(ctx: DemoContext, tokenizer, max_positions: int) -> tuple[list[dict[str, Any]], dict]:
    """Key-value proxy samples at a context the base model handles, with the held-out prose values of the
    base model's own proxy evaluation (:func:`stage_base_model.proxy_values`; line fragments of reST markup as
    values -- another value style than the sentences it was trained on -- gave it 0.28 token accuracy instead of
    0.87) and other keys (another seed).

    The base-model stage may record ``proxy_context_tokens`` / ``proxy_key_length``; otherwise the context
    is min(model positions, 512 (quick: 256)) and the key length starts at the paper's 32 characters and is
    halved until three demonstrations and a query fit.
    """
    from ..dataset_scripts.proxy_task import build_proxy_samples
    from .stage_base_model import proxy_values

    hints = ctx.results.get("base_model", {}) or {}
    context = int(hints.get("proxy_context_tokens") or (256 if ctx.quick else 512))
    context = min(context, max_positions)
    key_length = int(hints.get("proxy_key_length") or 32)
    max_value_tokens = int(hints.get("proxy_max_value_tokens") or 30)
    values = proxy_values(ctx, tokenizer, max_value_tokens)
    num_samples = 16 if ctx.quick else 120
    while True:
        try:
            samples = build_proxy_samples(
                values, tokenizer, num_samples=num_samples, context_tokens=context, key_length=key_length,
                seed=ctx.seed,
            )  # fmt: skip
            return samples, {
                "context_tokens": context,
                "key_length": key_length,
                "max_value_tokens": max_value_tokens,
                "num_samples": num_samples,
            }
        except ValueError as err:
            if "too small" not in str(err) or key_length <= 4:
                raise
            key_length //= 2


def run(ctx: DemoContext) -> dict:
    from ..retrieval_heads import detect_retrieval_heads

    model, tokenizer = load_base(ctx)
    max_positions = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    samples, settings = proxy_samples(ctx, tokenizer, max_positions)
    heads = detect_retrieval_heads(model, tokenizer, proxy=samples, top_fraction=0.05)
    heads.model_name = str(ctx.base_model_dir)
    out = ctx.stage_dir("retrieval_heads")
    path = heads.save(out / "retrieval_heads.json")
    heads.plot_heatmap(out / "retrieval_heads.png")
    return {
        "heads_file": str(path),
        "selected": [list(h) for h in heads.selected],
        "num_layers": heads.scores.shape[0],
        "num_heads": heads.scores.shape[1],
        "samples_used": heads.num_samples,
        "samples_dropped": heads.num_dropped,
        "teacher_forced_answer_accuracy": round(heads.extra["mean_answer_accuracy"], 4),
        "top_heads": [[layer, head, round(score, 4)] for layer, head, score in heads.ranking()[:8]],
        "proxy": settings,
    }


def report_html(ctx: DemoContext, result: dict) -> str:
    from ..retrieval_heads import RetrievalHeads

    heads = RetrievalHeads.load(result["heads_file"])
    rows = "".join(
        f"<tr><td>{layer}</td><td>{head}</td><td>{score:.3f}</td></tr>"
        for layer, head, score in result["top_heads"]
    )
    return (
        f"<p>{len(result['selected'])} of {result['num_layers'] * result['num_heads']} heads selected (top 5%) "
        f"from {result['samples_used']} proxy samples ({result['samples_dropped']} failed and dropped; "
        f"teacher-forced answer accuracy {result['teacher_forced_answer_accuracy']:.3f}; proxy "
        f"{html.escape(str(result['proxy']))}).</p>"
        f"<table><tr><th>layer</th><th>head</th><th>retrieval score</th></tr>{rows}</table>"
        f"<img src='data:image/png;base64,{heads.heatmap_base64()}'>"
    )
