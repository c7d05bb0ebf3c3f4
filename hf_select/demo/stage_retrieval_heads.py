"""Demo stage: the retrieval heads of SmolLM2-135M-Instruct and the masking sanity check of AttentionInfluence
(arXiv 2505.07293, section 3.2 and appendix D).

Proxy calibrated for the selector (the paper's 4096-token, 32-character-key proxy is for a 1.3B model; on this
135M model it fails the key lookup): contexts of :attr:`ProxySettings.context_tokens` tokens, 8-character keys,
values of at most 16 tokens, the JSON-line layout of ``hf_select/attention_influence/proxy_task.py``; plain text (the chat
template lowered the lookup rate from 25% to 0% in the calibration runs). Values are held-out prose sentences.
Heads are detected on one set of samples; appendix D's check runs on other samples (another seed): accuracy
with no head masked, with the selected top 5% masked and with the same number of random non-retrieval heads masked
(``random_draws`` draws; non-retrieval = retrieval score below ``non_retrieval_threshold``, 0.1 as in Wu et al.
2024, who call a head with a score above 0.1 a retrieval head). The paper reads it on whole-answer accuracy: a >= 80% relative drop for the top heads,
<= 20% for random ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..figures import img_html
from .context import DemoContext

TITLE = "Retrieval heads of SmolLM2 and the masking check (AttentionInfluence, App. D)"


@dataclass
class ProxySettings:
    context_tokens: int = 320
    key_length: int = 8
    max_value_tokens: int = 16
    detection_samples: int = 24
    check_samples: int = 20
    random_draws: int = 5
    top_fraction: float = 0.05
    non_retrieval_threshold: float = 0.1


QUICK = ProxySettings(context_tokens=300, detection_samples=6, check_samples=6, random_draws=2)


def proxy_values(ctx: DemoContext, tokenizer, max_value_tokens: int) -> list[str]:
    """Held-out prose sentences (any domain when prose is scarce; train sentences too when the held-out split
    is tiny) usable as proxy values."""
    from ..attention_influence.proxy_task import clean_values
    from ..dataset_scripts.demo_world import sample_sentences
    from .students import load_pretrain_split

    heldout = load_pretrain_split(ctx, "heldout")
    sentences = sample_sentences(heldout, limit=4000, domain="prose")
    if len(sentences) < 200:
        sentences += [s for d in ("literature", "math", "code") for s in sample_sentences(heldout, 2000, d)]
    values = clean_values(sentences, tokenizer, max_value_tokens=max_value_tokens)
    if len(values) < 50:
        train = load_pretrain_split(ctx, "train")
        more = sample_sentences(train.select(range(min(200, len(train)))), 2000, "prose")
        values += [
            v for v in clean_values(more, tokenizer, max_value_tokens=max_value_tokens) if v not in values
        ]
    return values


def masking_check(model, tokenizer, samples, heads, settings: ProxySettings, seed: int) -> dict[str, Any]:
    """Proxy accuracy unmasked, with ``heads.selected`` masked and with as many random non-retrieval heads
    masked (App. D; :func:`hf_select.attention_influence.proxy_accuracy.masking_check`)."""
    from ..attention_influence.proxy_accuracy import masking_check as check

    return check(model, tokenizer, samples, heads, settings.random_draws, seed, settings.non_retrieval_threshold)


def run(ctx: DemoContext) -> dict:
    from ..attention_influence.proxy_task import build_proxy_samples
    from ..attention_influence.retrieval_heads import detect_retrieval_heads
    from .stage_pretrained_model import load_pretrained

    settings = QUICK if ctx.quick else ProxySettings()
    model, tokenizer = load_pretrained(ctx)
    values = proxy_values(ctx, tokenizer, settings.max_value_tokens)

    def samples(n: int, seed: int):
        return build_proxy_samples(
            values, tokenizer, num_samples=n, context_tokens=settings.context_tokens,
            key_length=settings.key_length, seed=seed,
        )  # fmt: skip

    detection = samples(settings.detection_samples, ctx.seed)
    heads = detect_retrieval_heads(
        model, tokenizer, proxy=detection, top_fraction=settings.top_fraction, show_progress=False
    )
    heads.model_name = "SmolLM2-135M-Instruct (embedded)"
    out = ctx.stage_dir("retrieval_heads")
    path = heads.save(out / "retrieval_heads.json")
    heads.plot_heatmap(out / "retrieval_heads.png")
    check_samples = samples(settings.check_samples, ctx.seed + 7919)
    check = masking_check(model, tokenizer, check_samples, heads, settings, ctx.seed)
    chance = sum(1 / s["num_pairs"] for s in check_samples) / len(check_samples)
    return {
        "heads_file": str(path),
        "selected": [list(h) for h in heads.selected],
        "num_layers": heads.scores.shape[0],
        "num_heads": heads.scores.shape[1],
        "samples_used": heads.num_samples,
        "samples_dropped": heads.num_dropped,
        "teacher_forced_answer_accuracy": round(heads.extra["mean_answer_accuracy"], 4),
        "top_heads": [[layer, head, round(score, 4)] for layer, head, score in heads.ranking()[:10]],
        "proxy": {
            **asdict(settings),
            "mean_pairs": sum(s["num_pairs"] for s in check_samples) / len(check_samples),
        },
        "chance_sample_accuracy": round(chance, 4),
        "masking_check": check,
    }


def _pct(x) -> str:
    return "not computed" if x is None else f"{100 * x:.1f}%"


def report_html(ctx: DemoContext, result: dict) -> str:
    from ..attention_influence.retrieval_heads import RetrievalHeads

    heads = RetrievalHeads.load(result["heads_file"])
    rows = "".join(
        f"<tr><td>{layer}</td><td>{head}</td><td>{score:.3f}</td></tr>"
        for layer, head, score in result["top_heads"]
    )
    check = result["masking_check"]
    keys = ("sample_accuracy", "first_token_accuracy", "token_accuracy")
    check_rows = "".join(
        f"<tr><td>{label}</td>" + "".join(f"<td>{check[which][k]:.3f}</td>" for k in keys)
        + "".join(
            f"<td>{_pct(check['relative_drop'][which][k]) if which != 'none' else ''}</td>" for k in keys
        ) + "</tr>"
        for which, label in (
            ("none", "no head masked"),
            ("top", f"top {len(result['selected'])} heads masked"),
            ("random", f"{len(result['selected'])} random non-retrieval heads ({len(check['random_draws'])} draws, mean)"),
        )
    )  # fmt: skip
    p = result["proxy"]
    return (
        f"<p>{len(result['selected'])} of {result['num_layers'] * result['num_heads']} heads selected (top "
        f"{100 * p['top_fraction']:.0f}%) from {result['samples_used']} proxy samples ({result['samples_dropped']} "
        f"failed and dropped; teacher-forced answer accuracy {result['teacher_forced_answer_accuracy']:.3f}). Proxy: "
        f"{p['context_tokens']} tokens, {p['key_length']}-character keys, values &le; {p['max_value_tokens']} tokens, "
        f"{p['mean_pairs']:.1f} pairs on average (chance of a whole answer {result['chance_sample_accuracy']:.3f}); "
        f"check on {p['check_samples']} other samples.</p>"
        "<table><tr><th>masked</th><th>whole answer</th><th>first token (key lookup)</th><th>all answer tokens</th>"
        f"<th>drop (whole)</th><th>drop (first)</th><th>drop (tokens)</th></tr>{check_rows}</table>"
        "<p>Paper (App. D): &ge; 80% relative drop for the top heads, &le; 20% for random ones.</p>"
        f"<table><tr><th>layer</th><th>head</th><th>retrieval score</th></tr>{rows}</table>"
        f"{img_html(heads.plot_heatmap(), alt='retrieval scores per head')}"
    )
