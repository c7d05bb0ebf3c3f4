"""Demo stage: a student trained with OPUS dynamic batch selection (arXiv 2602.05400).

Same initialisation, row length, steps and update tokens as the baseline student (``students.py``). Each step
OPUS scores ``2x`` the batch of candidates drawn from the packed rows of the pretraining train split plus the
low-quality pool (``world/lowq``, domain ``lowq``) and trains on half of them.

Proxy set: the train-split documents most similar (lexical TF-IDF, :func:`hf_select.build_proxy_pool`) to the
train/dev items of the demo's evaluation tasks -- never their evaluated test items. When no task has a
train/dev split, a small slice of the held-out split (the first 32 documents) is used instead and the summary
says so (that slice is then also part of the held-out perplexity evaluation: a mild leak, reported).
"""

from __future__ import annotations

import html
import json

from .context import DemoContext
from .students import (
    fresh_student,
    load_pretrain_split,
    load_tokenizer,
    packed_rows,
    save_student,
    tokenize_documents,
    training_arguments,
)

TITLE = "Student trained with OPUS dynamic batch selection"
NAME = "opus"


def _rows_by_domain(ctx: DemoContext, dataset, tokenizer, domain: str | None = None):
    from datasets import concatenate_datasets

    tokenized = tokenize_documents(dataset, tokenizer)
    parts = []
    domains = [domain] if domain is not None else sorted(set(dataset["domain"]))
    for name in domains:
        subset = (
            tokenized
            if domain is not None
            else tokenized.filter(lambda d, n=name: d == n, input_columns="domain")
        )
        rows = packed_rows(ctx, subset)
        parts.append(rows.add_column("domain", [name] * len(rows)))
    return concatenate_datasets(parts)


def _proxy_documents(ctx: DemoContext, train):
    from ..proxy_pool import benchmark_proxy_texts, build_proxy_pool

    tasks = (
        sorted((ctx.world_dir / "eval_tasks").glob("*.yaml"))
        if (ctx.world_dir / "eval_tasks").exists()
        else []
    )
    targets = benchmark_proxy_texts(tasks) if tasks else []
    if targets:
        size = max(16, min(256, len(train) // 50))
        return build_proxy_pool(train, targets, size=size), f"benchmark train/dev items ({len(targets)})"
    heldout = load_pretrain_split(ctx, "heldout")
    return heldout.select(range(min(32, len(heldout)))), "held-out slice (no train/dev task items)"


def run(ctx: DemoContext) -> dict:
    from datasets import concatenate_datasets, load_from_disk

    from ..trainer_ext.opus_config import OPUSConfig
    from ..trainer_ext.opus_trainer import OPUSTrainer, selected_domain_shares

    tokenizer = load_tokenizer(ctx)
    train = load_pretrain_split(ctx, "train")
    candidates = _rows_by_domain(ctx, train, tokenizer)
    lowq_dir = ctx.world_dir / "lowq"
    if lowq_dir.exists():
        candidates = concatenate_datasets(
            [candidates, _rows_by_domain(ctx, load_from_disk(str(lowq_dir)), tokenizer, "lowq")]
        )
    proxy_docs, proxy_source = _proxy_documents(ctx, train)
    proxy = packed_rows(ctx, tokenize_documents(proxy_docs, tokenizer))
    settings = ctx.student_settings
    args = OPUSConfig(
        **training_arguments(
            ctx,
            NAME,
            score_window=max(16, settings.seq_length // 4),
            proxy_batch_size=8,
            sketch_dim=8192,
            buffer_factor=2.0,
        )
    )
    model = fresh_student(ctx).train()
    trainer = OPUSTrainer(
        model=model, args=args, train_dataset=candidates, proxy_dataset=proxy, processing_class=tokenizer
    )
    trainer.train()
    shares = selected_domain_shares(trainer.opus_history)
    timings = {k: round(v, 2) for k, v in trainer.opus_timings.items()}
    path = save_student(ctx, NAME, model, tokenizer, {"method": "OPUS", "proxy": proxy_source})
    history = trainer.opus_history
    summary = {
        "student_dir": str(path),
        "steps": settings.max_steps,
        "update_rows_per_step": settings.batch_size,
        "candidates_per_step": args.candidates_per_device,
        "proxy_source": proxy_source,
        "proxy_rows": len(proxy),
        "domain_shares": shares,
        "mean_effective_sample_size": sum(r["effective_sample_size"] for r in history) / max(1, len(history)),
        "mean_utility_spread": sum(r["utility_spread"] for r in history) / max(1, len(history)),
        "selection_seconds": timings,
        "final_train_loss": next(
            (h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None
        ),
    }
    (ctx.stage_dir(f"student_{NAME}") / "opus_history.json").write_text(json.dumps(history))
    return summary


def report_html(ctx: DemoContext, result: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(d)}</td><td>{v['candidates']:.1%}</td><td>{v['selected']:.1%}</td></tr>"
        for d, v in result.get("domain_shares", {}).items()
    )
    return (
        f"<p>Proxy: {html.escape(str(result.get('proxy_source')))}; {result.get('candidates_per_step')} candidates "
        f"-> {result.get('update_rows_per_step')} rows per step; mean effective sample size "
        f"{result.get('mean_effective_sample_size', 0):.1f}; selection time {result.get('selection_seconds')}.</p>"
        f"<table><tr><th>domain</th><th>share of candidates</th><th>share selected</th></tr>{rows}</table>"
    )
