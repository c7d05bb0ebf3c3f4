"""Demo stage: the baseline student -- a plain HF ``Trainer`` on the packed pretraining rows, no selection.

Every other student (SLM, MeCo, OPUS) shares its initialisation, rows, steps and tokens (``students.py``), so
the evaluation stage compares data selection and nothing else.
"""

from __future__ import annotations

import time
from typing import Any

from .context import DemoContext

TITLE = "Student: baseline (plain Trainer, all data)"


def run(ctx: DemoContext) -> dict[str, Any]:
    from transformers import Trainer, TrainingArguments

    from ..packing import PackedCollator
    from .students import (
        fresh_student,
        load_tokenizer,
        pretrain_rows,
        save_student,
        training_arguments,
    )

    tokenizer = load_tokenizer(ctx)
    rows = pretrain_rows(ctx, tokenizer)
    model = fresh_student(ctx)
    args = TrainingArguments(**training_arguments(ctx, "baseline"))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=PackedCollator(pad_token_id=tokenizer.pad_token_id),
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    s = ctx.student_settings
    summary = {
        "train_seconds": round(seconds, 1),
        "steps": s.max_steps,
        "tokens": s.max_steps * s.batch_size * s.seq_length,
        "final_loss": losses[-1][1] if losses else None,
        "loss_curve": losses,
    }
    path = save_student(ctx, "baseline", model, tokenizer, extra={"method": "baseline", **summary})
    return {**summary, "path": str(path)}


def report_html(ctx: DemoContext, result: dict[str, Any]) -> str:
    from .report import loss_curves_html

    loss = result["final_loss"]
    return (
        f"<p>{result['steps']} steps, {result['tokens'] / 1e6:.2f}M tokens in {result['train_seconds']}s; final "
        f"training loss {loss if loss is None else round(loss, 3)}. Saved at <code>{result['path']}</code>.</p>"
        + loss_curves_html({"baseline": result.get("loss_curve", [])}, "baseline student")
    )
