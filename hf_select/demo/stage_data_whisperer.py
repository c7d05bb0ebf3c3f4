"""Demo stage: Data Whisperer on the fine-tuning pool (arXiv 2505.12212).

Scores a tier-stratified sample of ``world/finetune`` with the demo base model, measures whether the scores
favour the better tiers (AUROC of score vs tier), fine-tunes the base model on the top 10%, a random 10% and
the full sample, and reports held-out ROUGE-L / exact match, gold loss and STR (selection wall-clock / full
fine-tuning wall-clock).

Tier ordering (from the ``tier`` column): ``high`` (Python FAQ, perlfaq) > ``medium`` (FOLDOC, Jargon,
docstrings) > ``low`` (WordNet, GCIDE); integer tiers are taken as ranks (higher = better). The AUROC is the
ordinal concordance: over all pairs of examples from different tiers, the share where the better-tier
example has the higher score (ties count one half) -- 0.5 is chance, 1.0 perfect.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from dataclasses import dataclass

import numpy as np
from transformers.utils import logging

from .context import DemoContext

logger = logging.get_logger(__name__)

TITLE = "Data Whisperer: training-free selection of fine-tuning data"
TIER_RANK = {"high": 2, "medium": 1, "low": 0}


@dataclass
class ExperimentSettings:
    """Sizes and budgets of the experiment (quick mode shrinks everything)."""

    per_tier: int = 60
    heldout_size: int = 120
    fraction: float = 0.1
    n_demos: int = 5
    n_queries: int = 3
    max_answer_tokens: int = 24
    max_retries: int = 1
    epochs: float = 3.0
    learning_rate: float = 1e-3
    batch_size: int = 8
    use_lora: bool = False
    max_generate: int = 48
    seed: int = 0


QUICK = ExperimentSettings(
    per_tier=8, heldout_size=12, max_answer_tokens=12, max_retries=1, epochs=1.0, max_generate=4
)


def tier_ranks(tiers) -> np.ndarray:
    """Numeric rank of every tier label (``high``/``medium``/``low`` or integers; higher = better)."""
    out = []
    for tier in tiers:
        if isinstance(tier, (int, np.integer)):
            out.append(int(tier))
        elif str(tier).lower() in TIER_RANK:
            out.append(TIER_RANK[str(tier).lower()])
        else:
            raise ValueError(f"unknown tier {tier!r}; expected one of {list(TIER_RANK)} or an integer rank")
    return np.array(out)


def tier_auroc(scores, ranks) -> float:
    """P(score of a better-tier example > score of a worse-tier one) over pairs of different tiers (NaN skipped)."""
    scores, ranks = np.asarray(scores, dtype=float), np.asarray(ranks)
    keep = ~np.isnan(scores)
    scores, ranks = scores[keep], ranks[keep]
    better = ranks[:, None] > ranks[None, :]
    if not better.any():
        return float("nan")
    wins = (scores[:, None] > scores[None, :]) + 0.5 * (scores[:, None] == scores[None, :])
    return float(wins[better].mean())


def stratified_sample(dataset, per_tier: int, seed: int = 0):
    """Up to ``per_tier`` random examples of every tier."""
    rng = np.random.default_rng(seed)
    tiers = np.array([str(t) for t in dataset["tier"]])
    picks = []
    for tier in sorted(set(tiers)):
        idx = np.nonzero(tiers == tier)[0]
        picks.extend(rng.choice(idx, min(per_tier, len(idx)), replace=False).tolist())
    return dataset.select(sorted(picks))


def run_experiment(model_factory, tokenizer, train, heldout, settings: ExperimentSettings, work_dir) -> dict:
    """The whole experiment on a ``question, answer, tier`` pool; returns a JSON-ready summary."""
    from ..data_whisperer import DataWhisperer
    from ..finetune import FinetuneArguments, compare_subsets, format_comparison
    from ..selection import top_fraction_indices

    pool = stratified_sample(train, settings.per_tier, settings.seed)
    needed = 2 * max(settings.n_demos, settings.n_queries) + 4
    if len(pool) < needed:  # a pool with few tiers (the quick world has one): sample across tiers instead
        pool = train.shuffle(seed=settings.seed).select(range(min(len(train), max(needed, len(pool)))))
    rng = np.random.default_rng(settings.seed)
    held = heldout.select(
        sorted(rng.choice(len(heldout), min(settings.heldout_size, len(heldout)), replace=False))
    )
    whisperer = DataWhisperer(
        model_factory(),
        tokenizer,
        n_demos=settings.n_demos,
        n_queries=settings.n_queries,
        max_answer_tokens=settings.max_answer_tokens,
        max_retries=settings.max_retries,
        seed=settings.seed,
    )
    start = time.perf_counter()
    scores = whisperer.score(pool)
    selection_seconds = time.perf_counter() - start
    ranks = tier_ranks(pool["tier"])
    # unscored examples rank last; if too few were scored the selection is flagged invalid below
    selected = top_fraction_indices(np.nan_to_num(scores, nan=-np.inf), settings.fraction)
    tiers = np.array([str(t) for t in pool["tier"]])
    sources = np.array([str(s) for s in pool["source"]]) if "source" in pool.column_names else tiers
    per_tier = {
        t: {
            "n": int((tiers == t).sum()),
            "mean_score": float(np.nanmean(scores[tiers == t]))
            if np.isfinite(scores[tiers == t]).any()
            else None,
            "share_of_top": float((tiers[selected] == t).mean()),
        }
        for t in sorted(set(tiers.tolist()), key=lambda t: -tier_ranks([t])[0])
    }
    per_source = {
        s: float(np.nanmean(scores[sources == s])) if np.isfinite(scores[sources == s]).any() else None
        for s in sorted(set(sources.tolist()))
    }
    args = FinetuneArguments(
        output_dir=str(work_dir / "trainer"),
        use_lora=settings.use_lora,
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=settings.seed,
        disable_tqdm=True,
        logging_steps=50,
    )
    comparison = compare_subsets(
        model_factory,
        tokenizer,
        pool,
        held,
        selected,
        args,
        selection_seconds=selection_seconds,
        max_generate=settings.max_generate,
        max_new_tokens=settings.max_answer_tokens,
    )
    table = format_comparison(comparison)
    finite = np.isfinite(scores)
    if finite.sum() < len(selected):
        logger.warning(
            f"only {int(finite.sum())} of {len(pool)} examples got a Data Whisperer score (the model could not "
            f"answer the prompts in the expected format); the 'selected' subset is not a real selection"
        )
    return {
        "pool_size": len(pool),
        "heldout_size": len(held),
        "selected_size": len(selected),
        "attn_layer": whisperer.attn_layer,
        "dw_stats": whisperer.stats,
        "unparsed_generations": whisperer.unparsed[:3],
        "scored_examples": int(finite.sum()),
        # the top fraction is only a Data Whisperer selection when enough examples got a score
        "selection_valid": bool(finite.sum() >= len(selected)),
        "auroc_score_vs_tier": tier_auroc(scores, ranks),
        "auroc_high_vs_low": tier_auroc(scores[ranks != 1], ranks[ranks != 1]),
        "per_tier": per_tier,
        "per_source_mean_score": per_source,
        "selection_seconds": selection_seconds,
        "STR": comparison.get("STR"),
        "comparison": comparison,
        "table": table,
        "selected_beats_random_metric": comparison["selected"]["metric"] > comparison["random"]["metric"],
        "selected_beats_random_loss": comparison["selected"]["gold_loss"] < comparison["random"]["gold_loss"],
        "scores": [None if not np.isfinite(s) else float(s) for s in scores],
        "tiers": tiers.tolist(),
    }


def run(ctx: DemoContext) -> dict:
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = QUICK if ctx.quick else ExperimentSettings()
    settings.seed = ctx.seed
    data = load_from_disk(str(ctx.world_dir / "finetune"))
    tokenizer = AutoTokenizer.from_pretrained(ctx.tokenizer_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def base_model():
        return AutoModelForCausalLM.from_pretrained(ctx.base_model_dir, use_safetensors=True).eval()

    out_dir = ctx.stage_dir("data_whisperer")
    result = run_experiment(base_model, tokenizer, data["train"], data["heldout"], settings, out_dir)
    (out_dir / "scores.json").write_text(json.dumps({"scores": result["scores"], "tiers": result["tiers"]}))
    logger.warning(
        f"[data whisperer] AUROC(score vs tier) = {result['auroc_score_vs_tier']:.3f}\n{result['table']}"
    )
    result.pop("scores")
    result.pop("tiers")
    return result


def _plot(ctx: DemoContext) -> str:
    path = ctx.output_dir / "stages" / "data_whisperer" / "scores.json"
    if not path.exists():
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(path.read_text())
    tiers = np.array(data["tiers"])
    scores = np.array([np.nan if s is None else s for s in data["scores"]])
    fig, ax = plt.subplots(figsize=(6, 3))
    labels = sorted(set(tiers), key=lambda t: -tier_ranks([t])[0])
    ax.boxplot([scores[(tiers == t) & np.isfinite(scores)] for t in labels])
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set_ylabel("Data Whisperer score")
    ax.set_title("score by tier")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f"<img src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def report_html(ctx: DemoContext, result: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{v['n']}</td><td>{v['mean_score']}</td><td>{v['share_of_top']:.2f}</td></tr>"
        for t, v in result["per_tier"].items()
    )
    return (
        f"<p>Pool of {result['pool_size']} examples (stratified by tier); {result['scored_examples']} got a score "
        f"({result['dw_stats']}; selection valid: {result.get('selection_valid')}). AUROC of score vs tier: <b>{result['auroc_score_vs_tier']:.3f}</b> "
        f"(high vs low: {result['auroc_high_vs_low']:.3f}; 0.5 = chance).</p>"
        f"<table><tr><th>tier</th><th>n</th><th>mean score</th><th>share of top 10%</th></tr>{rows}</table>"
        f"<p>Fine-tuning the base model (selected vs random subset of the same size vs full sample), held-out "
        f"metric and gold loss; STR = selection time / full fine-tuning time:</p>"
        f"<pre>{html.escape(result['table'])}</pre>{_plot(ctx)}"
    )
