"""Main-job stage: the MeCo student (metadata conditioning then cooldown, arXiv 2501.01956).

Same initialisation, row length, batch size, steps (hence tokens) and optimiser settings as the baseline student
(``hf_select.demo.students``). The first 90% of the steps see training documents prefixed with
``"URL: <host>\\n\\n"`` (host of the ``url`` column, official rule); the last 10% see plain documents from a
disjoint 10% of the train split. The held-out split is scored without metadata, with each document's own URL
and with a fixed unrelated URL.
"""

from __future__ import annotations

import html
from typing import Any

from .context import DemoContext
from .students import fresh_student, load_pretrain_split, load_tokenizer, save_student, training_arguments

TITLE = "MeCo student: URL conditioning then cooldown"
COOLDOWN_FRACTION = 0.1
UNRELATED_URL = "www.factquizmaster.com"


def heldout_bits_per_byte(
    model, tokenizer, heldout, max_docs: int = 200, max_chars: int = 2000
) -> dict[str, float]:
    """Mean held-out bits per byte without metadata, with each document's own URL host, and with an unrelated
    URL (the same characters of each document are scored in all three)."""
    from ..conditional import prefixed_text_losses, url_prefix
    from ..metadata import metadata_prefix

    rows = heldout.select(range(min(max_docs, len(heldout))))
    texts = [t[:max_chars] for t in rows["text"]]
    model.eval()
    results = {}
    for name, prefix in (
        ("none", None),
        ("own_url", [metadata_prefix(u) for u in rows["url"]]),
        ("unrelated_url", url_prefix(UNRELATED_URL)),
    ):
        out = prefixed_text_losses(model, tokenizer, texts, prefix)
        results[name] = sum(out["nats"]) / 0.6931471805599453 / max(sum(out["num_bytes"]), 1)
    return results


def run(ctx: DemoContext) -> dict[str, Any]:
    from ..trainer_ext import MeCoConfig, MeCoTrainer
    from ..trainer_ext.meco_trainer import split_cooldown_pool

    settings = ctx.student_settings
    tokenizer = load_tokenizer(ctx)
    documents = load_pretrain_split(ctx, "train")
    conditioning, cooldown = split_cooldown_pool(documents, COOLDOWN_FRACTION, settings.seed)
    args = MeCoConfig(
        **training_arguments(
            ctx,
            "meco",
            cooldown_fraction=COOLDOWN_FRACTION,
            max_length=settings.seq_length,
            metadata_column="url",
            metadata_mode="host",
        )
    )
    model = fresh_student(ctx)
    trainer = MeCoTrainer(
        model, args, train_dataset=conditioning, cooldown_dataset=cooldown, processing_class=tokenizer
    )
    schedule = trainer.train_dataset
    tokens = sum(len(ids) for ids in schedule["input_ids"])
    trained = sum(sum(lab != -100 for lab in labels) for labels in schedule["labels"])
    output = trainer.train()
    bpb = heldout_bits_per_byte(
        model, tokenizer, load_pretrain_split(ctx, "heldout"), 50 if ctx.quick else 200
    )
    summary = {
        "student": "meco",
        "max_steps": args.max_steps,
        "conditioned_steps": trainer.conditioned_steps,
        "cooldown_steps": args.max_steps - trainer.conditioned_steps,
        "conditioning_documents": len(conditioning),
        "cooldown_documents": len(cooldown),
        "tokens_seen": int(tokens),
        "trained_tokens": int(trained),
        "train_loss": round(float(output.training_loss), 4),
        "heldout_bits_per_byte": {k: round(v, 4) for k, v in bpb.items()},
    }
    save_student(ctx, "meco", model, tokenizer, extra=summary)
    return summary


def report_html(ctx: DemoContext, result: dict[str, Any]) -> str:
    bpb = result.get("heldout_bits_per_byte", {})
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{value}</td></tr>" for name, value in bpb.items())
    return (
        f"<p>{result.get('conditioned_steps')} steps with <code>URL: host</code> prefixes (labels -100 on the "
        f"prefix), then {result.get('cooldown_steps')} cooldown steps on plain documents from a disjoint pool; "
        f"{result.get('tokens_seen')} tokens seen ({result.get('trained_tokens')} trained), the same steps and "
        f"rows as the baseline.</p><table><tr><th>held-out prefix</th><th>bits per byte</th></tr>{rows}</table>"
    )
