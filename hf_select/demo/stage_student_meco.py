"""Main-job stage: the MeCo student (metadata conditioning then cooldown, arXiv 2501.01956).

Same architecture, initialisation per seed, row length, steps (hence update tokens) and optimiser settings as the
baseline student (``hf_select.demo.students``). The first 90% of the steps see pool documents prefixed with
``"URL: <host>\\n\\n"`` (host of the ``url`` column, official rule; loss-masked); the last 10% see plain documents
from a disjoint 10% of the pool, in the same run. Held-out documents are scored without metadata (the headline
number, comparable to the other students), with each document's own URL and with a fixed unrelated URL.
"""

from __future__ import annotations

import html
from typing import Any

from .context import DemoContext

TITLE = "Student: MeCo (URL conditioning then cooldown)"
NAME = "meco"
COOLDOWN_FRACTION = 0.1
UNRELATED_URL = "www.factquizmaster.com"


def conditional_bits_per_byte(model, tokenizer, heldout) -> dict[str, float]:
    """Held-out bits per byte with each document's own URL host and with an unrelated URL (same characters)."""
    from ..meco.conditional import url_prefix
    from ..meco.metadata import metadata_prefix
    from .students import heldout_bits_per_byte

    texts = heldout["text"]
    return {
        "own_url_bits_per_byte": round(heldout_bits_per_byte(model, tokenizer, texts, [metadata_prefix(u) for u in heldout["url"]]), 4),
        "unrelated_url_bits_per_byte": round(heldout_bits_per_byte(model, tokenizer, texts, url_prefix(UNRELATED_URL)), 4),
    }  # fmt: skip


def run(ctx: DemoContext) -> dict[str, Any]:
    from ..trainer_ext import MeCoConfig, MeCoTrainer
    from ..trainer_ext.meco_trainer import split_cooldown_pool
    from .students import (
        fresh_student,
        heldout_documents,
        load_tokenizer,
        mean_and_spread,
        pool_documents,
        run_seeds,
        trainer_losses,
        training_arguments,
    )

    settings = ctx.student_settings
    tokenizer = load_tokenizer(ctx)
    conditioning, cooldown = split_cooldown_pool(pool_documents(ctx), COOLDOWN_FRACTION, ctx.seed)
    heldout = heldout_documents(ctx)
    schedule = {}

    def train_one(seed: int):
        args = MeCoConfig(
            **training_arguments(
                ctx, NAME, seed, cooldown_fraction=COOLDOWN_FRACTION, max_length=settings.seq_length,
                metadata_column="url", metadata_mode="host",
            )
        )  # fmt: skip
        model = fresh_student(ctx, tokenizer, seed)
        trainer = MeCoTrainer(
            model, args, train_dataset=conditioning, cooldown_dataset=cooldown, processing_class=tokenizer
        )
        schedule.update(
            conditioned_steps=trainer.conditioned_steps,
            cooldown_steps=args.max_steps - trainer.conditioned_steps,
        )
        output = trainer.train()
        return model, {
            "train_seconds": round(output.metrics["train_runtime"], 1),
            "loss_curve": trainer_losses(trainer),
        }

    result = run_seeds(
        ctx, NAME, train_one, tokenizer, lambda m: conditional_bits_per_byte(m, tokenizer, heldout)
    )
    for key in ("own_url_bits_per_byte", "unrelated_url_bits_per_byte"):
        result[key] = mean_and_spread([r[key] for r in result["per_seed"]])
    return {
        **result,
        **schedule,
        "conditioning_documents": len(conditioning),
        "cooldown_documents": len(cooldown),
        "unrelated_url": UNRELATED_URL,
    }


def report_html(ctx: DemoContext, result: dict[str, Any]) -> str:
    from .report import student_summary_html

    rows = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{result[key]['mean']} &plusmn; {result[key]['std']}</td></tr>"
        for key, label in (
            ("heldout_bits_per_byte", "no prefix"),
            ("own_url_bits_per_byte", "own URL host"),
            ("unrelated_url_bits_per_byte", f"unrelated URL ({result['unrelated_url']})"),
        )
    )
    return (
        f"<p>{result.get('conditioned_steps')} steps with <code>URL: host</code> prefixes (labels -100 on the "
        f"prefix), then {result.get('cooldown_steps')} cooldown steps on plain documents from a disjoint pool "
        f"({result['cooldown_documents']} documents), in one run.</p>"
        + student_summary_html(result)
        + f"<table><tr><th>held-out prefix</th><th>bits per byte</th></tr>{rows}</table>"
    )
