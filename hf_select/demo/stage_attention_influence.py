"""Demo stage: AttentionInfluence scores of the demo pretraining corpus and the top 20% per domain
(arXiv 2505.07293)."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

from transformers.utils import logging

from .context import DemoContext

logger = logging.get_logger(__name__)

TITLE = "AttentionInfluence scores and per-domain selection"


def _heads_file(ctx: DemoContext) -> Path:
    recorded = (ctx.results.get("retrieval_heads") or {}).get("heads_file")
    path = (
        Path(recorded) if recorded else ctx.output_dir / "stages" / "retrieval_heads" / "retrieval_heads.json"
    )
    if not path.exists():
        raise FileNotFoundError(f"no retrieval heads at {path}: run the retrieval_heads stage first")
    return path


def run(ctx: DemoContext) -> dict:
    """Score a per-domain sample of the train split (quick: 24 documents per domain, else 200; the first
    2000 characters of each, to fit the stage budget on 2 CPU cores), keep the top 20% per domain."""
    import numpy as np
    from datasets import concatenate_datasets

    from ..attention_influence import AttentionInfluence, score_dataset
    from ..retrieval_heads import RetrievalHeads
    from ..selection import top_fraction_rows
    from .stage_retrieval_heads import load_base
    from .students import load_pretrain_split

    heads = RetrievalHeads.load(_heads_file(ctx))
    model, tokenizer = load_base(ctx)
    train = load_pretrain_split(ctx)
    per_domain = 24 if ctx.quick else 200
    max_chars = 2000
    parts = []
    for domain in sorted(set(train["domain"])):
        rows = [i for i, d in enumerate(train["domain"]) if d == domain]
        rng = np.random.default_rng(ctx.seed)
        chosen = sorted(rng.choice(rows, size=min(per_domain, len(rows)), replace=False).tolist())
        parts.append(train.select(chosen))
    sample = concatenate_datasets(parts).map(lambda t: {"text": t[:max_chars]}, input_columns="text")
    max_positions = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    scorer = AttentionInfluence(
        model, tokenizer, heads.selected, max_length=min(512, max_positions), batch_size=8
    )
    scored = score_dataset(sample, scorer, batch_size=64)
    rows = set(top_fraction_rows(scored, "ai_score", fraction=0.2, by="domain").tolist())
    scored = scored.add_column("ai_selected", [i in rows for i in range(len(scored))])
    selected = scored.filter(lambda flag: flag, input_columns="ai_selected")
    out = ctx.stage_dir("attention_influence")
    scored.save_to_disk(str(out / "scored"))
    selected.save_to_disk(str(out / "selected"))
    summary = {}
    for domain in sorted(set(scored["domain"])):
        values = [
            s for s, d in zip(scored["ai_score"], scored["domain"]) if d == domain and not math.isnan(s)
        ]
        picked = [s for s, d in zip(selected["ai_score"], selected["domain"]) if d == domain]
        summary[domain] = {
            "documents": len(values),
            "mean_score": round(float(np.mean(values)), 5) if values else None,
            "selected": len(picked),
            "selected_mean_score": round(float(np.mean(picked)), 5) if picked else None,
        }
    return {
        "scored_dataset": str(out / "scored"),
        "selected_dataset": str(out / "selected"),
        "heads": [list(h) for h in heads.selected],
        "documents_per_domain": per_domain,
        "max_chars_per_document": max_chars,
        "per_domain": summary,
    }


def _histograms(scored) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = sorted(set(scored["domain"]))
    fig, axes = plt.subplots(1, len(domains), figsize=(4 * len(domains), 3), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        values = [
            s for s, d in zip(scored["ai_score"], scored["domain"]) if d == domain and not math.isnan(s)
        ]
        ax.hist(values, bins=30, color="steelblue")
        if values:
            cut = sorted(values)[int(0.8 * (len(values) - 1))]
            ax.axvline(cut, color="red", lw=1, label="top 20%")
            ax.legend()
        ax.set_title(f"{domain} (n={len(values)})")
        ax.set_xlabel("AttentionInfluence score")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def report_html(ctx: DemoContext, result: dict) -> str:
    from datasets import load_from_disk

    from ..retrieval_heads import RetrievalHeads

    scored = load_from_disk(result["scored_dataset"])
    rows = "".join(
        f"<tr><td>{d}</td><td>{s['documents']}</td><td>{s['mean_score']}</td><td>{s['selected']}</td>"
        f"<td>{s['selected_mean_score']}</td></tr>"
        for d, s in result["per_domain"].items()
    )
    heatmap = RetrievalHeads.load(_heads_file(ctx)).heatmap_base64("masked heads (red)")
    return (
        f"<p>Scored {result['documents_per_domain']} documents per domain (first "
        f"{result['max_chars_per_document']} characters) with heads {result['heads']} masked; "
        f"scores compare only within a domain. Scored dataset: <code>{result['scored_dataset']}</code>.</p>"
        "<table><tr><th>domain</th><th>documents</th><th>mean score</th><th>selected (top 20%)</th>"
        f"<th>selected mean</th></tr>{rows}</table>"
        f"<img src='data:image/png;base64,{_histograms(scored)}'><img src='data:image/png;base64,{heatmap}'>"
    )
