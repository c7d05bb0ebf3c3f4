"""Main-job stage: a student trained with RHO-1 Selective Language Modeling (arXiv 2404.07965).

The student has the same initialisation, rows, steps and tokens as every other student
(:mod:`hf_select.demo.students`); only its loss differs: the mean cross-entropy over the 60% of tokens with the
highest excess loss over a reference, ranked over the whole batch ("global" scope).

Reference (documented choice): the demo world's base model -- the same architecture trained on the demo corpus,
run online as a frozen model. RHO-1 trains its reference on a small high-quality corpus; a separate reference
run does not fit this stage's time budget on two CPU cores, so the paper's recipe (reference trained on a clean
subset, noisy training text) is replicated in ``benchmarks/slm_noise.py`` instead.
"""

from __future__ import annotations

import html

TITLE = "Student: RHO-1 Selective Language Modeling"
NAME = "slm"


def run(ctx) -> dict:
    from ..loading import load_causal_lm
    from ..trainer_ext.slm_config import SLMConfig
    from ..trainer_ext.slm_trainer import SLMTrainer
    from .students import (
        fresh_student,
        load_tokenizer,
        pretrain_rows,
        save_student,
        training_arguments,
    )

    tokenizer = load_tokenizer(ctx)
    rows = pretrain_rows(ctx, tokenizer)
    reference = load_causal_lm(str(ctx.base_model_dir))
    args = SLMConfig(
        **training_arguments(ctx, NAME, disable_tqdm=True),
        token_select_ratio=0.6,
        select_scope="global",
        score="excess_loss",
    )
    model = fresh_student(ctx)
    trainer = SLMTrainer(
        model=model, args=args, ref_model=reference, train_dataset=rows, processing_class=tokenizer
    )
    output = trainer.train()
    history = [h for h in trainer.state.log_history if "slm_selected_share" in h]
    save_student(ctx, NAME, model, tokenizer, extra={"method": "rho1-slm", "reference": "demo base model"})
    last = history[-1] if history else {}
    return {
        "student": NAME,
        "steps": trainer.state.global_step,
        "train_loss_selected_tokens": round(output.training_loss, 4),
        "token_select_ratio": args.token_select_ratio,
        "select_scope": args.select_scope,
        "reference": "demo base model (online, frozen)",
        "final_selected_share": last.get("slm_selected_share"),
        "final_loss_selected": last.get("slm_loss_selected"),
        "final_loss_unselected": last.get("slm_loss_unselected"),
        "final_excess_loss": last.get("slm_excess_loss"),
        "history": [
            {k: h[k] for k in ("step", "slm_loss_selected", "slm_loss_unselected", "slm_ref_loss") if k in h}
            for h in history
        ],
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
        ax.plot(steps, [h[key] for h in history], label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("token loss")
    ax.legend()
    return figure_html(fig, alt="SLM token losses")


def report_html(ctx, result: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(result.get(k)))}</td></tr>"
        for k in (
            "steps",
            "token_select_ratio",
            "select_scope",
            "reference",
            "train_loss_selected_tokens",
            "final_selected_share",
            "final_loss_selected",
            "final_loss_unselected",
            "final_excess_loss",
        )
    )
    text = (
        "<p>Trains only on the tokens whose loss exceeds the reference's the most; the others stay in the "
        "context. Selected tokens carry a higher student loss than unselected ones: SLM spends the updates on "
        "what is learnable but not yet learned.</p>"
    )
    history = [h for h in result.get("history", []) if "slm_ref_loss" in h]
    image = _plot(history) if len(history) > 1 else ""
    return f"{text}<table>{rows}</table>{image}"
