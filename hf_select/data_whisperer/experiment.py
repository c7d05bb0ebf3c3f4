"""The Data Whisperer experiment (arXiv 2505.12212): score a tier-stratified pool, fine-tune on the selection,
on random subsets and on the full set, and measure whether the scores favour the better tiers.

:func:`run_experiment` scores the pool with :class:`~hf_select.data_whisperer.DataWhisperer`, measures the AUROC
of score vs tier (and high vs low), LoRA fine-tunes (peft) on the top ``fraction``, on random subsets of the
same size, on the top ``larger_fraction`` and on the full pool (:func:`~hf_select.data_whisperer.finetune.
compare_subsets`), and reports held-out ROUGE-L / exact match, gold loss and STR (selection wall-clock / full
fine-tuning wall-clock, both measured in the same run). The demo's stage and ``benchmarks/dw_experiment.py``
run it.

Tier ordering (from the ``tier`` column): ``high`` > ``medium`` > ``low``; integer tiers are taken as ranks
(higher = better). The AUROC is the ordinal concordance: over all pairs of examples from different tiers, the
share where the better-tier example has the higher score (ties count one half) -- 0.5 is chance, 1.0 perfect.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging

from ..selection import top_fraction_indices
from .finetune import FinetuneArguments, compare_subsets, format_comparison
from .scorer import DataWhisperer

logger = logging.get_logger(__name__)

TIER_RANK = {"high": 2, "medium": 1, "low": 0}


@dataclass
class ExperimentSettings:
    """Sizes and budgets of the experiment (quick mode shrinks everything)."""

    per_tier: int = 20
    heldout_size: int = 24
    fraction: float = 0.1
    larger_fraction: float = 0.3
    random_seeds: tuple[int, ...] = (0, 1, 2)
    n_demos: int = 5
    n_queries: int = 3
    max_answer_tokens: int = 32
    max_retries: int = 1
    max_chars_per_field: int = 300
    answer_chars: int = 160
    query_mode: str = "separate"
    epochs: float = 2.0
    learning_rate: float = 3e-4
    batch_size: int = 4
    max_length: int = 128
    use_lora: bool = True
    max_generate: int = 6
    seed: int = 0


QUICK = ExperimentSettings(
    per_tier=4, heldout_size=6, max_answer_tokens=12, max_retries=0, epochs=1.0, max_generate=2,
    random_seeds=(0,), max_chars_per_field=120,
)  # fmt: skip


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


def short_answers(dataset, max_chars: int):
    """Answers cut to their first sentence and at most ``max_chars`` characters (whitespace collapsed).

    The demo's fine-tuning pool mixes one-line definitions with FAQ answers of several paragraphs; a 135M model
    imitates long demonstrations and then runs out of its answer budget. Every answer -- demonstrations, gold
    answers and fine-tuning targets alike -- is the short form, so the task is consistent.
    """
    import re

    def cut(batch):
        out = []
        for answer in batch["answer"]:
            text = " ".join(str(answer).split())
            first = re.match(r"(.+?[.!?])(\s|$)", text)
            out.append((first.group(1) if first else text)[:max_chars])
        return {"answer": out}

    return dataset.map(cut, batched=True, desc="short answers")


def _pool_and_heldout(train, heldout, settings: ExperimentSettings):
    """The tier-stratified pool to score and the held-out sample (short answers when asked)."""
    if settings.answer_chars:
        train, heldout = (
            short_answers(train, settings.answer_chars),
            short_answers(heldout, settings.answer_chars),
        )
    pool = stratified_sample(train, settings.per_tier, settings.seed)
    needed = 2 * max(settings.n_demos, settings.n_queries) + 4
    if len(pool) < needed:  # a pool with few tiers (the quick world has one): sample across tiers instead
        pool = train.shuffle(seed=settings.seed).select(range(min(len(train), max(needed, len(pool)))))
    rng = np.random.default_rng(settings.seed)
    held = heldout.select(
        sorted(rng.choice(len(heldout), min(settings.heldout_size, len(heldout)), replace=False))
    )
    return pool, held


def _finetune_arguments(settings: ExperimentSettings, work_dir: Path) -> FinetuneArguments:
    return FinetuneArguments(
        output_dir=str(work_dir / "trainer"),
        use_lora=settings.use_lora,
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        max_length=settings.max_length,
        lr_scheduler_type="cosine",
        warmup_steps=0,  # a few steps per run: a warmup step at LR 0 would be a large share of them
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        seed=settings.seed,
        disable_tqdm=True,
        logging_steps=50,
    )


def _tier_summary(scores: np.ndarray, pool, selected) -> tuple[dict, dict]:
    """Per tier: size, mean score and share of the selected top; per source: mean score."""
    tiers = np.array([str(t) for t in pool["tier"]])
    sources = np.array([str(s) for s in pool["source"]]) if "source" in pool.column_names else tiers
    per_tier = {
        t: {
            "n": int((tiers == t).sum()),
            "mean_score": float(np.nanmean(scores[tiers == t]))
            if np.isfinite(scores[tiers == t]).any()
            else None,
            # a share of the top is only meaningful when the top holds scored examples
            "share_of_top": float((tiers[selected] == t).mean())
            if np.isfinite(scores[selected]).all()
            else None,
        }
        for t in sorted(set(tiers.tolist()), key=lambda t: -tier_ranks([t])[0])
    }
    per_source = {
        s: float(np.nanmean(scores[sources == s])) if np.isfinite(scores[sources == s]).any() else None
        for s in sorted(set(sources.tolist()))
    }
    return per_tier, per_source


def run_experiment(model_factory, tokenizer, train, heldout, settings: ExperimentSettings, work_dir) -> dict:
    """The whole experiment on a ``question, answer, tier`` pool; returns a JSON-ready summary (see the module
    docstring). ``model_factory()`` returns a fresh model for each run; ``work_dir`` holds the scorer's resume
    state and the trainer's folder."""
    work_dir = Path(work_dir)
    pool, held = _pool_and_heldout(train, heldout, settings)
    whisperer = DataWhisperer(
        model_factory(),
        tokenizer,
        n_demos=settings.n_demos,
        n_queries=settings.n_queries,
        max_answer_tokens=settings.max_answer_tokens,
        max_retries=settings.max_retries,
        max_chars_per_field=settings.max_chars_per_field,
        query_mode=settings.query_mode,
        seed=settings.seed,
        state_dir=work_dir / "dw_state",  # a killed demo resumes its scoring
    )
    start = time.perf_counter()
    scores = whisperer.score(pool)
    # resumed groups add the wall-clock they took in the earlier run
    selection_seconds = time.perf_counter() - start + whisperer.resumed_seconds
    ranks = tier_ranks(pool["tier"])
    # unscored examples rank last; if too few were scored the selection is flagged invalid below
    ranked = np.nan_to_num(scores, nan=-np.inf)
    selected = top_fraction_indices(ranked, settings.fraction)
    larger = top_fraction_indices(ranked, settings.larger_fraction)
    per_tier, per_source = _tier_summary(scores, pool, selected)
    args = _finetune_arguments(settings, work_dir)
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
        random_seeds=settings.random_seeds,
        larger_selected=larger,
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
        "invalid_group_share": whisperer.stats["invalid_groups"] / max(whisperer.stats["groups"], 1),
        "auroc_score_vs_tier": tier_auroc(scores, ranks),
        "auroc_high_vs_low": tier_auroc(scores[ranks != 1], ranks[ranks != 1]),
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.__dict__.items()},
        "per_tier": per_tier,
        "per_source_mean_score": per_source,
        "selection_seconds": selection_seconds,
        "STR": comparison.get("STR"),
        "comparison": comparison,
        "table": table,
        "selected_beats_random_metric": comparison["selected"]["metric"] > comparison["random"]["metric"],
        "selected_beats_random_loss": comparison["selected"]["gold_loss"] < comparison["random"]["gold_loss"],
        "scores": [None if not np.isfinite(s) else float(s) for s in scores],
        "tiers": [str(t) for t in pool["tier"]],
    }
