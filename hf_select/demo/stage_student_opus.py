"""Demo stage: a student trained with OPUS dynamic batch selection (arXiv 2602.05400).

Same architecture, initialisation per seed, row length, steps and update tokens as the baseline student
(``students.py``). Each step OPUS scores ``2x`` the batch of candidate rows drawn from the pool (clean and
low-quality documents) and trains on half of them.

Proxy set: the world's train-split documents most similar (lexical TF-IDF, :func:`hf_select.build_proxy_pool`) to
the train/dev items of the demo's evaluation tasks -- never their evaluated test items. When no task has a
train/dev split, a small slice of the held-out split is used instead and the summary says so.
"""

from __future__ import annotations

import html
import json

from .context import DemoContext

TITLE = "Student: OPUS dynamic batch selection"
NAME = "opus"


def _proxy_documents(ctx: DemoContext):
    from ..opus.proxy_pool import benchmark_proxy_texts, build_proxy_pool
    from .students import load_pretrain_split

    train = load_pretrain_split(ctx, "train")
    tasks = (
        sorted((ctx.world_dir / "eval_tasks").glob("*.yaml"))
        if (ctx.world_dir / "eval_tasks").exists()
        else []
    )
    targets = benchmark_proxy_texts(tasks) if tasks else []
    if targets:
        size = 16 if ctx.quick else 64
        return build_proxy_pool(train, targets, size=size), f"benchmark train/dev items ({len(targets)})"
    heldout = load_pretrain_split(ctx, "heldout")
    return heldout.select(range(min(32, len(heldout)))), "held-out slice (no train/dev task items)"


def rows_by_domain(ctx: DemoContext, documents, tokenizer):
    """Packed rows of ``documents``, packed domain by domain so that every row carries one ``domain``."""
    from datasets import concatenate_datasets

    from .students import packed_rows, tokenize_documents

    tokenized = tokenize_documents(documents, tokenizer)
    parts = []
    for name in sorted(set(documents["domain"])):
        rows = packed_rows(ctx, tokenized.filter(lambda d, n=name: d == n, input_columns="domain"))
        parts.append(rows.add_column("domain", [name] * len(rows)))
    return concatenate_datasets(parts)


def run(ctx: DemoContext) -> dict:
    from ..trainer_ext.opus_config import OPUSConfig
    from ..trainer_ext.opus_trainer import OPUSTrainer, selected_domain_shares
    from .students import (
        fresh_student,
        load_tokenizer,
        packed_rows,
        pool_documents,
        run_seeds,
        tokenize_documents,
        trainer_losses,
        training_arguments,
    )

    tokenizer = load_tokenizer(ctx)
    candidates = rows_by_domain(ctx, pool_documents(ctx), tokenizer)
    proxy_docs, proxy_source = _proxy_documents(ctx)
    proxy = packed_rows(ctx, tokenize_documents(proxy_docs, tokenizer))
    settings = ctx.student_settings
    histories = {}

    def train_one(seed: int):
        args = OPUSConfig(
            **training_arguments(
                ctx, NAME, seed, score_window=max(16, settings.seq_length // 4), proxy_batch_size=8,
                sketch_dim=8192, buffer_factor=2.0,
            )
        )  # fmt: skip
        model = fresh_student(ctx, tokenizer, seed).train()
        trainer = OPUSTrainer(
            model=model, args=args, train_dataset=candidates, proxy_dataset=proxy, processing_class=tokenizer
        )
        output = trainer.train()
        histories[seed] = trainer.opus_history
        history = trainer.opus_history
        return model, {
            "train_seconds": round(output.metrics["train_runtime"], 1),
            "candidates_per_step": args.candidates_per_device,
            "domain_shares": selected_domain_shares(history),
            "mean_effective_sample_size": sum(r["effective_sample_size"] for r in history)
            / max(1, len(history)),
            "selection_seconds": {k: round(v, 2) for k, v in trainer.opus_timings.items()},
            "loss_curve": trainer_losses(trainer),
        }

    result = run_seeds(ctx, NAME, train_one, tokenizer)
    (ctx.stage_dir(f"student_{NAME}") / "opus_history.json").write_text(json.dumps(histories))
    return {
        **result,
        "proxy_source": proxy_source,
        "proxy_rows": len(proxy),
        "candidate_rows": len(candidates),
    }


def report_html(ctx: DemoContext, result: dict) -> str:
    from .report import student_summary_html

    first = result["per_seed"][0]
    rows = "".join(
        f"<tr><td>{html.escape(d)}</td><td>{v['candidates']:.1%}</td><td>{v['selected']:.1%}</td></tr>"
        for d, v in first.get("domain_shares", {}).items()
    )
    return (
        f"<p>Proxy: {html.escape(str(result.get('proxy_source')))} ({result['proxy_rows']} rows); "
        f"{first.get('candidates_per_step')} candidates per step; seed {first['seed']}: mean effective sample size "
        f"{first.get('mean_effective_sample_size', 0):.1f}, selection time {first.get('selection_seconds')}.</p>"
        + student_summary_html(result)
        + f"<table><tr><th>domain</th><th>share of candidates</th><th>share selected</th></tr>{rows}</table>"
    )
