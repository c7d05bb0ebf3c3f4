"""Demo stage: evaluate the base model and every student with the harness; publish the scored dataset.

Every HF folder under ``ctx.students_dir`` (plus ``ctx.base_model_dir``) is evaluated on the tasks in
``ctx.world_dir / "eval_tasks"`` (quick mode: the first few items per task). A student whose
``hf_select_student.json`` names an ``eval_prefix`` (MeCo's conditional inference, arXiv:2501.01956) gets a
second row evaluated with that prefix. The AttentionInfluence scored dataset, when that stage produced one,
is written in Hub layout (FineWeb-Edu style configs) to ``ctx.output_dir / "scored_dataset"``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from transformers.utils import logging

from .context import DemoContext

logger = logging.get_logger(__name__)

TITLE = "Evaluation of the students (hf-select harness)"
QUICK_LIMIT = 4
FULL_LIMIT = 100
# Some gold solutions (MATH, MBPP) are longer than the base model's nominal 1024 positions, which lm-eval (and the
# harness, faithfully) refuses to score. The students use RoPE (no position table), so the demo scores at 4096.
MAX_LENGTH = 4096
SCORE_BINS = 10
THRESHOLDS = (5, 8)  # int_score (decile) >= 5: top half; >= 8: top 20%


def _models(ctx: DemoContext) -> list[tuple[str, Path, str | None]]:
    """(row name, folder, prefix) for the base model and each student."""
    models = [("base", ctx.base_model_dir, None)] if (ctx.base_model_dir / "config.json").exists() else []
    if ctx.students_dir.is_dir():
        for folder in sorted(p for p in ctx.students_dir.iterdir() if (p / "config.json").exists()):
            models.append((folder.name, folder, None))
            meta = folder / "hf_select_student.json"
            prefix = json.loads(meta.read_text()).get("eval_prefix") if meta.exists() else None
            if prefix:
                models.append((f"{folder.name} + prefix", folder, prefix))
    return models


def _tokenizer(ctx: DemoContext, folder: Path):
    from hf_select.loading import load_tokenizer

    source = folder if (folder / "tokenizer_config.json").exists() else ctx.tokenizer_dir
    return load_tokenizer(str(source))


def _publish_scored_dataset(ctx: DemoContext) -> dict[str, Any] | None:
    ai = ctx.results.get("attention_influence") or {}
    path = ai.get("scored_dataset")
    if not path or not Path(path).exists():
        return None
    from datasets import DatasetDict, load_from_disk

    from hf_select.hub import push_scored_dataset

    dataset = load_from_disk(str(path))
    if isinstance(dataset, DatasetDict):
        dataset = dataset["train"] if "train" in dataset else next(iter(dataset.values()))
    heads = ai.get("heads") or (ctx.results.get("retrieval_heads") or {}).get("heads")
    params = {
        k: v
        for k, v in ai.items()
        if k not in ("scored_dataset", "seconds", "heads") and isinstance(v, (int, float, str, bool))
    }
    folder = push_scored_dataset(
        dataset,
        local_dir=ctx.output_dir / "scored_dataset",
        score_column="ai_score",
        thresholds=THRESHOLDS,
        int_score_bins=SCORE_BINS,
        method="attention_influence",
        model_id=str(ctx.base_model_dir),
        model_revision="local",
        heads=heads,
        params=params,
        title="AttentionInfluence scores of the demo corpus",
    )
    card = Path(folder) / "README.md"
    return {
        "folder": str(folder),
        "card": str(card),
        "configs": ["default", *[f"int_score_ge_{t}" for t in THRESHOLDS]],
    }


def run(ctx: DemoContext) -> dict[str, Any]:
    from hf_select.eval import comparison_markdown, comparison_table, evaluate, load_tasks
    from hf_select.loading import load_causal_lm

    stage = ctx.stage_dir("evaluation")
    tasks = load_tasks(ctx.world_dir / "eval_tasks")
    limit = QUICK_LIMIT if ctx.quick else FULL_LIMIT
    outputs = {}
    for name, folder, prefix in _models(ctx):
        model = load_causal_lm(str(folder))
        outputs[name] = evaluate(
            model,
            _tokenizer(ctx, folder),
            tasks,
            batch_size=16,
            prefix=prefix,
            limit=limit,
            max_length=MAX_LENGTH,
            output_dir=stage / name.replace(" + ", "_"),
            model_name=name,
            show_progress=False,
        )
    header, rows = comparison_table(outputs)
    (stage / "results.md").write_text(comparison_markdown(outputs))
    return {
        "tasks": [t.name for t in tasks],
        "limit_per_task": limit,
        "table": {"header": header, "rows": rows},
        "results": {name: out["results"] for name, out in outputs.items()},
        "scored_dataset": _publish_scored_dataset(ctx),
    }


def report_html(ctx: DemoContext, result: dict[str, Any]) -> str:
    table = result.get("table") or {"header": [], "rows": []}
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table["header"])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in table["rows"]
    )
    parts = [
        f"<p>Tasks: {html.escape(', '.join(result.get('tasks', [])))}; at most {result.get('limit_per_task')} "
        "items per task. acc / acc_norm agree with lm-evaluation-harness 0.4.13; bits per byte: lower is "
        "better.</p>",
        f"<table><tr>{head}</tr>{body}</table>",
    ]
    scored = result.get("scored_dataset")
    if scored:
        parts.append(
            f"<p>AttentionInfluence scored dataset in Hub layout: <code>{html.escape(scored['folder'])}</code> "
            f"(configs: {html.escape(', '.join(scored['configs']))}); "
            "<code>load_dataset(folder, config)</code> loads it.</p>"
        )
        image = Path(scored["folder"]) / "score_histogram.png"
        if image.exists():
            import base64

            data = base64.b64encode(image.read_bytes()).decode()
            parts.append(f"<img alt='score histogram' src='data:image/png;base64,{data}'>")
    return "\n".join(parts)
