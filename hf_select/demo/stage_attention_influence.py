"""Demo stage: AttentionInfluence scores of the students' clean pool with SmolLM2-135M-Instruct as the selector
and the top 20% per domain (arXiv 2505.07293).

The scored documents are the clean part of the students' pool (:func:`hf_select.demo.students.pool_documents`),
so that the "AttentionInfluence mix" student can up-weight the selection as the paper does (the selected 20%
added once more to the full pool). Scores compare only within a domain. The paper finds the selected documents
about 2x longer than the rest: the stage reports the selected and rejected documents' mean full length (the
score reads each clipped document whole: ``MAX_LENGTH`` tokens hold the longest).

The base (unmasked) pass is also the SLM student's reference pass: SmolLM2 over the same documents. The stage
keeps each document's reference losses projected onto the students' tokenizer (column ``ref_loss``,
:class:`hf_select.demo.shared_pass.ScoresWithReferenceLosses`), and the students stage hands them to the SLM arm,
which runs SmolLM2 only over the documents this stage does not score (the low-quality ones). Documents are
encoded BOS + tokens (``add_bos``), the reference pass's encoding.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from .context import DemoContext

TITLE = "AttentionInfluence scores and per-domain selection (selector: SmolLM2)"
FRACTION = 0.2
MAX_LENGTH = 1024  # above the longest clipped pool document (746 SmolLM2 tokens at 900 characters)


def _heads_file(ctx: DemoContext) -> Path:
    recorded = (ctx.results.get("retrieval_heads") or {}).get("heads_file")
    path = (
        Path(recorded) if recorded else ctx.output_dir / "stages" / "retrieval_heads" / "retrieval_heads.json"
    )
    if not path.exists():
        raise FileNotFoundError(f"no retrieval heads at {path}: run the retrieval_heads stage first")
    return path


def run(ctx: DemoContext) -> dict:
    from ..attention_influence.retrieval_heads import RetrievalHeads
    from ..attention_influence.scorer import AttentionInfluence
    from ..selection import top_fraction_rows
    from .shared_pass import ScoresWithReferenceLosses
    from .stage_pretrained_model import load_pretrained
    from .students import load_tokenizer, pool_documents

    heads = RetrievalHeads.load(_heads_file(ctx))
    model, tokenizer = load_pretrained(ctx)
    pool = pool_documents(ctx)
    clean = pool.filter(lambda q: q == "clean", input_columns="quality")
    max_length = MAX_LENGTH
    scorer = AttentionInfluence(model, tokenizer, heads.selected, max_length=max_length, batch_size=8, add_bos=True)
    # one SmolLM2 pass for two methods: the base pass also gives the SLM student's reference losses
    shared = ScoresWithReferenceLosses(scorer, load_tokenizer(ctx))
    scored = clean.map(shared, batched=True, batch_size=64, new_fingerprint=shared.fingerprint(clean),
                       desc="AttentionInfluence + reference losses")  # fmt: skip
    rows = set(top_fraction_rows(scored, "ai_score", fraction=FRACTION, by="domain").tolist())
    scored = scored.add_column("ai_selected", [i in rows for i in range(len(scored))])
    out = ctx.stage_dir("attention_influence")
    scored.save_to_disk(str(out / "scored"))
    summary = {}
    for domain in sorted(set(scored["domain"])):
        part = scored.filter(lambda d, name=domain: d == name, input_columns="domain")
        values = [s for s in part["ai_score"] if not math.isnan(s)]
        chosen = [r for r in part if r["ai_selected"]]
        rest = [r for r in part if not r["ai_selected"] and not math.isnan(r["ai_score"])]
        sel_len = float(np.mean([r["doc_chars"] for r in chosen])) if chosen else None
        rest_len = float(np.mean([r["doc_chars"] for r in rest])) if rest else None
        top = max(chosen, key=lambda r: r["ai_score"]) if chosen else None
        bottom = min(rest, key=lambda r: r["ai_score"]) if rest else None
        summary[domain] = {
            "documents": len(values),
            "mean_score": round(float(np.mean(values)), 5) if values else None,
            "std_score": round(float(np.std(values)), 5) if values else None,
            "selected": len(chosen),
            "selected_mean_score": round(float(np.mean([r["ai_score"] for r in chosen])), 5)
            if chosen
            else None,
            "selected_mean_chars": round(sel_len, 1) if sel_len else None,
            "rest_mean_chars": round(rest_len, 1) if rest_len else None,
            "length_ratio": round(sel_len / rest_len, 3) if sel_len and rest_len else None,
            "example_selected": None
            if top is None
            else {"score": top["ai_score"], "text": top["text"][:400]},
            "example_rejected": None
            if bottom is None
            else {"score": bottom["ai_score"], "text": bottom["text"][:400]},
        }
    ratios = [s["length_ratio"] for s in summary.values() if s["length_ratio"]]
    tokens = int(sum(scored["ai_num_tokens"]))
    return {
        "scored_dataset": str(out / "scored"),
        "reference_losses_documents": sum(v is not None for v in scored["ref_loss"]),
        "heads": [list(h) for h in heads.selected],
        "documents": len(scored),
        "scored_tokens": tokens,
        "max_length": max_length,
        "fraction": FRACTION,
        "per_domain": summary,
        "mean_length_ratio": round(float(np.mean(ratios)), 3) if ratios else None,
    }


def _histograms(scored) -> str:
    from .report import figure_html, new_figure

    domains = sorted(set(scored["domain"]))
    fig, axes = new_figure(figsize=(3.2 * len(domains), 2.8), ncols=len(domains))
    for ax, domain in zip(np.atleast_1d(axes), domains):
        values = [
            s for s, d in zip(scored["ai_score"], scored["domain"]) if d == domain and not math.isnan(s)
        ]
        ax.hist(values, bins=20, color="steelblue")
        if values:
            ax.axvline(
                sorted(values)[int((1 - FRACTION) * (len(values) - 1))], color="red", lw=1, label="top 20%"
            )
            ax.legend(fontsize=7)
        ax.set_title(f"{domain} (n={len(values)})")
        ax.set_xlabel("AttentionInfluence score")
    return figure_html(fig, alt="AttentionInfluence score per domain")


def report_html(ctx: DemoContext, result: dict) -> str:
    from datasets import load_from_disk

    scored = load_from_disk(result["scored_dataset"])
    rows = "".join(
        f"<tr><td>{d}</td><td>{s['documents']}</td><td>{s['mean_score']} &plusmn; {s['std_score']}</td>"
        f"<td>{s['selected']}</td><td>{s['selected_mean_score']}</td><td>{s['selected_mean_chars']}</td>"
        f"<td>{s['rest_mean_chars']}</td><td>{s['length_ratio']}</td></tr>"
        for d, s in result["per_domain"].items()
    )
    examples = "".join(
        f"<h4>{html.escape(d)}</h4><p><b>selected</b> (score {s['example_selected']['score']:.4f}):</p>"
        f"<pre>{html.escape(s['example_selected']['text'])}</pre><p><b>rejected</b> (score "
        f"{s['example_rejected']['score']:.4f}):</p><pre>{html.escape(s['example_rejected']['text'])}</pre>"
        for d, s in result["per_domain"].items()
        if s["example_selected"] and s["example_rejected"]
    )
    return (
        f"<p>{result['documents']} clean pool documents ({result['scored_tokens']} tokens, first "
        f"{result['max_length']} tokens of each) scored with heads {result['heads']} masked; top "
        f"{100 * result['fraction']:.0f}% per domain selected. Selected vs rest mean length (full documents, "
        f"characters): ratio {result['mean_length_ratio']} on average (paper: ~2x).</p>"
        "<table><tr><th>domain</th><th>documents</th><th>score mean &plusmn; sd</th><th>selected</th>"
        "<th>selected mean score</th><th>selected chars</th><th>rest chars</th><th>length ratio</th></tr>"
        f"{rows}</table>{_histograms(scored)}<h3>Highest-scored selected and lowest-scored rejected documents</h3>"
        f"{examples}"
    )
