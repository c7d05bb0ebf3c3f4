"""Demo stage: the baseline student -- a plain HF ``Trainer`` on the packed rows of the pool, no selection.

Every other student (AttentionInfluence mix, SLM, MeCo, OPUS) shares its architecture, initialisation per seed,
pool, row length, steps and update tokens (``students.py``), so the comparison is about data selection alone.
"""

from __future__ import annotations

from typing import Any

from .context import DemoContext

TITLE = "Student: baseline (plain Trainer, whole pool)"
NAME = "baseline"


def train_plain(ctx: DemoContext, name: str, rows, tokenizer, seed: int):
    """One plain ``Trainer`` run of a fresh student on ``rows``; returns ``(model, info)``."""
    from transformers import Trainer, TrainingArguments

    from ..packing import PackedCollator
    from .students import fresh_student, trainer_losses, training_arguments

    model = fresh_student(ctx, tokenizer, seed)
    args = TrainingArguments(**training_arguments(ctx, name, seed))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=PackedCollator(pad_token_id=tokenizer.pad_token_id),
    )
    output = trainer.train()
    losses = trainer_losses(trainer)
    return model, {
        "train_seconds": round(output.metrics["train_runtime"], 1),
        "final_loss": losses[-1][1] if losses else None,
        "loss_curve": losses,
    }


def run(ctx: DemoContext) -> dict[str, Any]:
    from .students import load_tokenizer, pool_rows, run_seeds

    tokenizer = load_tokenizer(ctx)
    rows = pool_rows(ctx, tokenizer)
    return {
        **run_seeds(ctx, NAME, lambda seed: train_plain(ctx, NAME, rows, tokenizer, seed), tokenizer),
        "pool_rows": len(rows),
    }


def report_html(ctx: DemoContext, result: dict[str, Any]) -> str:
    from .report import loss_curves_html, student_summary_html

    curves = {f"seed {r['seed']}": r.get("loss_curve", []) for r in result["per_seed"]}
    return student_summary_html(result) + loss_curves_html(curves, f"{result['student']} student")
