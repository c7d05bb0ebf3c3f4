"""Demo stage: the small students as one ``compare`` study (:mod:`hf_select.compare`).

Arms: ``baseline`` (plain Trainer on the pool), ``attention_influence`` (the pool plus the top 20% per domain of
the AttentionInfluence stage's scores once more, the paper's up-weighting), ``random`` (the same up-weighting of a
random 20% of the same scored documents: what the AttentionInfluence mix buys over more repeats), ``slm`` (RHO-1
with SmolLM2's reference losses projected onto the students' tokenizer), ``meco`` and ``opus`` (proxy: the world's
documents nearest to the harness tasks' train/dev items). Seed ``s`` gives every arm the same initial weights;
every arm trains the same update tokens (:class:`~hf_select.demo.context.StudentSettings`). The stage writes the
study's own ``results.json`` / ``report.html`` / figures under ``stages/students/compare/``, and the first seed's
model of every arm to ``students/<arm>/`` for the evaluation stage. A killed run resumes inside the study.

Arms whose inputs are missing (no AttentionInfluence scores, no pretrained model for the SLM reference) are left
out and named in the result.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from typing import Any

from .context import DemoContext

TITLE = "Students: one paired compare study (baseline, AttentionInfluence mix, random mix, SLM, MeCo, OPUS)"
NAME = "students"
AI_FRACTION = 0.2
COOLDOWN_FRACTION = 0.1
UNRELATED_URL = "www.factquizmaster.com"

# arm name -> (method shown on the first screen, the paper's expectation, what this setting can and cannot show)
ARMS = {
    "attention_influence": (
        "AttentionInfluence mix", "paper (7B, 1T tokens): MMLU +1.4, GSM8K +2.7 points",
        "It can show whether repeating SmolLM2's top 20% per domain lowers a small student's held-out bits per "
        "byte; it cannot show the paper's reasoning-benchmark gains, which need billions of parameters and tokens.",
    ),
    "random": (
        "Random mix (control)", "no gain expected: the AttentionInfluence mix's control",
        "It separates the AttentionInfluence selection from the mere repetition of 20% of the documents; it "
        "cannot rank documents by anything.",
    ),
    "slm": (
        "RHO-1 SLM", "paper: up to +30% few-shot math accuracy; lower loss on useful tokens",
        "It can show what training on the 60% of tokens with the highest excess loss over SmolLM2 does to the "
        "loss on every held-out token; it cannot show RHO-1's math-accuracy gains (no math-trained reference, "
        "a student without reasoning ability).",
    ),
    "meco": (
        "MeCo", "paper: baseline quality with 33% less data; own URL helps, no URL works normally",
        "It can show the price or gain of URL conditioning at equal update tokens, and whether the student reads "
        "the URL; it cannot show the paper's data saving, which appears after 100B+ tokens and a long cooldown.",
    ),
    "opus": (
        "OPUS", "paper: +2.2% average accuracy on FineWeb pretraining",
        "It can show whether choosing each step's rows by their projected effect on the proxy set lowers "
        "held-out bits per byte; it cannot show the paper's benchmark gains, and its candidates per step are "
        "few at this budget.",
    ),
}  # fmt: skip


def proxy_documents(ctx: DemoContext):
    """OPUS's proxy: the world's train-split documents most similar (lexical TF-IDF) to the train/dev items of the
    demo's tasks -- never their evaluated test items; a held-out slice when no task has a train/dev split."""
    from ..opus.proxy_pool import benchmark_proxy_texts, build_proxy_pool
    from .students import load_pretrain_split

    train = load_pretrain_split(ctx, "train")
    folder = ctx.world_dir / "eval_tasks"
    targets = benchmark_proxy_texts(sorted(folder.glob("*.yaml"))) if folder.exists() else []
    if targets:
        return build_proxy_pool(train, targets, size=16 if ctx.quick else 64), f"benchmark train/dev items ({len(targets)})"
    heldout = load_pretrain_split(ctx, "heldout")
    return heldout.select(range(min(32, len(heldout)))), "held-out slice (no train/dev task items)"


def _scored_pool(ctx: DemoContext, pool):
    """The pool with the AttentionInfluence stage's ``ai_score`` (NaN on the low-quality documents, which it did
    not score) and ``ref_loss`` (the SLM reference losses its base pass gave; None where it gave none), or None
    when that stage has not run."""
    from datasets import load_from_disk

    path = (ctx.results.get("attention_influence") or {}).get("scored_dataset")
    if not path:
        return None
    scored = load_from_disk(path)
    clean = [i for i, q in enumerate(pool["quality"]) if q == "clean"]
    if [pool[i]["text"] for i in clean] != scored["text"]:
        raise ValueError(f"{path} does not score the students' pool (rerun the attention_influence stage)")
    scores = [math.nan] * len(pool)
    for i, value in zip(clean, scored["ai_score"]):
        scores[i] = math.nan if value is None else value
    pool = pool.add_column("ai_score", scores)
    if "ref_loss" in scored.column_names:
        losses = [None] * len(pool)
        for i, value in zip(clean, scored["ref_loss"]):
            losses[i] = value
        pool = pool.add_column("ref_loss", losses)
    return pool


def study_config(ctx: DemoContext, data_dir, arms: list):
    """The students' :class:`~hf_select.compare.StudyConfig` (budget from ``ctx.student_settings``)."""
    from ..compare import StudyConfig
    from .students import load_tokenizer, student_config

    s = ctx.student_settings
    # one checkpoint just past half way: a kill loses at most half a run, and no checkpoint is written at the last
    # step, which the finished run would delete at once (24 short runs: the saves are a visible share)
    model_config = {"model_type": "llama", **student_config(ctx, load_tokenizer(ctx)).to_diff_dict()}
    model_config.pop("transformers_version", None)
    return StudyConfig(
        output_dir=str(ctx.stage_dir(NAME) / "compare"), dataset_name_or_path=str(data_dir / "pool"),
        heldout_name_or_path=str(data_dir / "heldout"), heldout_documents_per_domain=10**6,
        tokenizer_name_or_path=str(ctx.tokenizer_dir),
        model_config=model_config,
        seq_length=s.seq_length, batch_size=s.batch_size, max_steps=s.max_steps, seeds=list(s.seeds),
        learning_rate=s.learning_rate, warmup_steps=s.warmup_ratio, weight_decay=0.01,
        logging_steps=max(1, s.max_steps // 20), save_steps=s.max_steps // 2 + 1, save_models=True,
        arms=arms,
    )  # fmt: skip


def run(ctx: DemoContext) -> dict[str, Any]:
    from ..compare import run_study
    from ..compare.report import first_screen_rows
    from .students import heldout_documents, load_tokenizer, pool_documents

    data_dir = ctx.stage_dir(NAME) / "data"
    pool = pool_documents(ctx)
    scored = _scored_pool(ctx, pool)
    arms: list = ["baseline"]
    skipped = {}
    if scored is not None:
        pool = scored
        subset = {"fraction": AI_FRACTION, "mode": "mix", "repeats": 1}
        arms += [{"type": "attention_influence", "scores_column": "ai_score", **subset},
                 {"type": "random", "eligible_column": "ai_score", **subset}]  # fmt: skip
    else:
        skipped["attention_influence"] = skipped["random"] = "no AttentionInfluence scores (stage not run)"
    if (ctx.model_dir / "config.json").exists():
        # reference losses of the AttentionInfluence stage's base pass where it gave them (the same SmolLM2 pass)
        given = {"reference_losses_column": "ref_loss"} if "ref_loss" in pool.column_names else {}
        arms.append({"type": "slm", "reference_model_name_or_path": str(ctx.model_dir),
                     "token_select_ratio": 0.6, "select_scope": "global", **given})  # fmt: skip
    else:
        skipped["slm"] = "no pretrained reference model"
    arms.append({"type": "meco", "cooldown_fraction": COOLDOWN_FRACTION, "unrelated_url": UNRELATED_URL})
    proxy, proxy_source = proxy_documents(ctx)
    arms.append({"type": "opus", "proxy_dataset_name_or_path": str(data_dir / "proxy"),
                 "score_window": max(16, ctx.student_settings.seq_length // 4), "proxy_batch_size": 8})  # fmt: skip
    pool.save_to_disk(str(data_dir / "pool"))
    heldout_documents(ctx).save_to_disk(str(data_dir / "heldout"))
    proxy.select_columns(["text"]).save_to_disk(str(data_dir / "proxy"))
    config = study_config(ctx, data_dir, arms)
    results = run_study(config)
    first_seed = config.seeds[0]
    for name, arm in results["arms"].items():
        folder = ctx.stage_dir(NAME) / "compare" / "runs" / name / f"seed{first_seed}" / "model"
        target = ctx.students_dir / name
        if folder.exists():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder, target)
            load_tokenizer(ctx).save_pretrained(target)
            meta = {"name": name, "method": arm["type"], "seed": first_seed}
            (target / "hf_select_student.json").write_text(json.dumps(meta))
    return {
        "compare_dir": config.output_dir,
        "seeds": config.seeds,
        "update_tokens": config.update_tokens,
        "heldout_documents": len(heldout_documents(ctx)),
        "proxy_source": proxy_source,
        "skipped_arms": skipped,
        "first_screen": first_screen_rows(results),
        "arms": {n: {k: a[k] for k in ("type", "metrics", "vs_baseline", "cost")}
                 | {"per_seed": [{"seed": r["seed"], **r["metrics"]} for r in a["runs"]]}
                 for n, a in results["arms"].items()},  # fmt: skip
    }


def report_html(ctx: DemoContext, result: dict[str, Any]) -> str:
    from pathlib import Path

    from ..figures import img_html

    folder = Path(result["compare_dir"])
    figures = "".join(
        f"<p>{img_html(path, alt=path.stem)}</p>" for path in sorted((folder / "figures").glob("*.png"))
    )
    skipped = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in result.get("skipped_arms", {}).items())
    return (
        f"<p>{len(result['seeds'])} seeds x {result['update_tokens']:,} update tokens per arm; held-out clean bits "
        f"per byte on {result['heldout_documents']} documents; OPUS proxy: {html.escape(result['proxy_source'])}. "
        f"Full study page: <code>{html.escape(str(folder / 'report.html'))}</code>.</p>"
        + (f"<p>Arms left out:</p><ul>{skipped}</ul>" if skipped else "")
        + figures
    )
