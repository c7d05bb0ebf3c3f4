"""Demo stage: a student trained on the AttentionInfluence mix -- the pool plus the top 20% per domain selected
by SmolLM2 once more (up-weighting, as the paper adds its selection to the full corpus; arXiv 2505.07293 sec. 4).

Same architecture, initialisation per seed, row length, steps and update tokens as the baseline: only the mix of
documents the rows are packed from differs.
"""

from __future__ import annotations

from typing import Any

from .context import DemoContext

TITLE = "Student: AttentionInfluence mix (pool + selected 20% again)"
NAME = "ai_mix"


def run(ctx: DemoContext) -> dict[str, Any]:
    from datasets import load_from_disk

    from ..selection import upweighted_mix
    from .stage_student_baseline import train_plain
    from .students import load_tokenizer, pool_documents, pool_rows, run_seeds

    scored_dir = (ctx.results.get("attention_influence") or {}).get("scored_dataset")
    if not scored_dir:
        raise FileNotFoundError("no AttentionInfluence scores: run the attention_influence stage first")
    pool = pool_documents(ctx)
    scored = load_from_disk(scored_dir)
    selected = scored.filter(lambda flag: flag, input_columns="ai_selected").select_columns(pool.column_names)
    mix = upweighted_mix(pool, selected, repeats=1, seed=ctx.seed, flag_column=None)
    tokenizer = load_tokenizer(ctx)
    rows = pool_rows(ctx, tokenizer, mix)
    result = run_seeds(ctx, NAME, lambda seed: train_plain(ctx, NAME, rows, tokenizer, seed), tokenizer)
    return {
        **result,
        "pool_documents": len(pool),
        "upweighted_documents": len(selected),
        "mix_rows": len(rows),
    }


def report_html(ctx: DemoContext, result: dict[str, Any]) -> str:
    from .report import student_summary_html

    return (
        f"<p>{result['upweighted_documents']} selected documents added once more to the {result['pool_documents']}"
        f"-document pool ({result['mix_rows']} packed rows).</p>" + student_summary_html(result)
    )
