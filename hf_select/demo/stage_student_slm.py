"""Main-job stage: a student trained with RHO-1 Selective Language Modeling (arXiv 2404.07965), SmolLM2 as the
reference.

The student keeps the world's 8k tokenizer, so the reference losses are projected across tokenizers
(:func:`hf_select.slm.cross_tokenizer.cross_tokenizer_reference_losses`: each student token gets SmolLM2's loss of
its characters, a SmolLM2 token cut by student boundaries split by SmolLM2's own prefix probabilities; tokens
without a reference value hold NaN and are never selected), precomputed once over the pool's documents and packed with exactly the
rows the baseline trains on (same packing, boundaries and masking). The loss is the mean cross-entropy over the
60% of tokens with the highest excess loss over the reference, ranked over the whole batch ("global" scope).

Reference (documented choice): RHO-1 trains its reference on a small high-quality corpus; here the pretrained
SmolLM2 (trained on FineWeb-Edu, DCLM and The Stack) plays that part, the weak-to-strong direction reversed: a
strong reference for a tiny student. ``benchmarks/slm_noise.py`` replicates the paper's own recipe.
"""

from __future__ import annotations

import html
import time

from .context import DemoContext

TITLE = "Student: RHO-1 Selective Language Modeling (reference: SmolLM2, cross-tokenizer)"
NAME = "slm"


def reference_rows(ctx: DemoContext, tokenizer):
    """Packed pool rows with a ``ref_loss`` column from SmolLM2 (computed once)."""
    from datasets import Dataset

    from ..packing import pack_documents
    from ..slm.cross_tokenizer import cross_tokenizer_reference_losses
    from .stage_pretrained_model import load_pretrained
    from .students import pool_documents

    reference, ref_tokenizer = load_pretrained(ctx)
    documents = pool_documents(ctx)
    per_doc = cross_tokenizer_reference_losses(
        documents["text"], reference, ref_tokenizer, tokenizer, batch_size=8, max_length=1024
    )
    packed = pack_documents(
        [d["input_ids"] for d in per_doc], ctx.student_settings.seq_length, overflow="discard",
        columns={"ref_loss": [d["ref_loss"] for d in per_doc]},
    )  # fmt: skip
    packed.pop("num_documents", None)
    return Dataset.from_dict(packed)


def run(ctx: DemoContext) -> dict:
    from ..trainer_ext.slm_config import SLMConfig
    from ..trainer_ext.slm_trainer import SLMTrainer
    from .students import fresh_student, load_tokenizer, run_seeds, trainer_losses, training_arguments

    tokenizer = load_tokenizer(ctx)
    start = time.perf_counter()
    rows = reference_rows(ctx, tokenizer)
    reference_seconds = time.perf_counter() - start

    def train_one(seed: int):
        args = SLMConfig(
            **training_arguments(ctx, NAME, seed),
            token_select_ratio=0.6,
            select_scope="global",
            score="excess_loss",
        )
        model = fresh_student(ctx, tokenizer, seed)
        trainer = SLMTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
        output = trainer.train()
        history = [h for h in trainer.state.log_history if "slm_selected_share" in h]
        last = history[-1] if history else {}
        return model, {
            "train_seconds": round(output.metrics["train_runtime"], 1),
            "train_loss_selected_tokens": round(output.training_loss, 4),
            "final_loss_selected": last.get("slm_loss_selected"),
            "final_loss_unselected": last.get("slm_loss_unselected"),
            "final_excess_loss": last.get("slm_excess_loss"),
            "loss_curve": trainer_losses(trainer),
            "history": [
                {
                    k: h[k]
                    for k in ("step", "slm_loss_selected", "slm_loss_unselected", "slm_ref_loss")
                    if k in h
                }
                for h in history
            ],
        }

    result = run_seeds(ctx, NAME, train_one, tokenizer)
    ref = [v for r in rows["ref_loss"] for v in r if v > 0]
    return {
        **result,
        "token_select_ratio": 0.6,
        "select_scope": "global",
        "reference": "SmolLM2-135M-Instruct (precomputed, projected across tokenizers)",
        "reference_seconds": round(reference_seconds, 1),
        "reference_rows": len(rows),
        "reference_mean_token_loss": round(sum(ref) / max(len(ref), 1), 4),
    }


def _plot(history) -> str:
    from .report import figure_html, new_figure

    fig, ax = new_figure(figsize=(6, 3))
    steps = [h["step"] for h in history]
    for key, label in (
        ("slm_loss_selected", "student, selected tokens"),
        ("slm_loss_unselected", "student, unselected tokens"),
        ("slm_ref_loss", "reference, all tokens"),
    ):
        ax.plot(steps, [h.get(key) for h in history], label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("token loss (nats per student token)")
    ax.legend()
    return figure_html(fig, alt="SLM token losses")


def report_html(ctx, result: dict) -> str:
    from .report import student_summary_html

    first = result["per_seed"][0]
    history = [h for h in first.get("history", []) if "slm_ref_loss" in h]
    return (
        f"<p>Reference: {html.escape(result['reference'])}, {result['reference_rows']} rows in "
        f"{result['reference_seconds']}s (mean {result['reference_mean_token_loss']} nats per student token). "
        f"Trains on the {100 * result['token_select_ratio']:.0f}% of tokens with the highest excess loss "
        f"({result['select_scope']} scope); the others stay in the context. Seed {first['seed']}, last logged step: "
        f"selected-token loss {first['final_loss_selected']}, unselected {first['final_loss_unselected']}.</p>"
        + student_summary_html(result)
        + (_plot(history) if len(history) > 1 else "")
    )
