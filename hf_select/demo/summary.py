"""The first screen of the demo report: one row per headline figure -- method, what was measured, the figure
with its spread, the paper's expectation and a verdict. A figure whose stage did not run (or could not compute
it) is shown as "not computed", never as a number.
"""

from __future__ import annotations

import html
import math
import statistics
from dataclasses import dataclass
from typing import Any

NOT_COMPUTED = "not computed"


@dataclass
class SummaryRow:
    method: str
    measured: str
    figure: str = NOT_COMPUTED
    expectation: str = ""
    verdict: str = NOT_COMPUTED


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _spread(stat: dict | None) -> str | None:
    if not stat or _num(stat.get("mean")) is None:
        return None
    return f"{stat['mean']:.4f} ± {stat['std']:.4f} (n={len(stat.get('values', []))})"


def _retrieval_rows(results: dict) -> list[SummaryRow]:
    heads = results.get("retrieval_heads") or {}
    check = heads.get("masking_check") or {}
    row = SummaryRow(
        "AttentionInfluence",
        "retrieval heads of SmolLM2; App. D: whole-answer proxy accuracy unmasked / top-5% heads masked / as many "
        "random non-retrieval heads masked",
        expectation="top heads: >= 80% relative drop; random heads: <= 20%",
    )
    if check:
        base, top, rand = (check[k]["sample_accuracy"] for k in ("none", "top", "random"))
        draws = [d["sample_accuracy"] for d in check.get("random_draws", [])]
        sd = (sum((d - rand) ** 2 for d in draws) / (len(draws) - 1)) ** 0.5 if len(draws) > 1 else 0.0
        drops = check.get("relative_drop", {})
        top_drop = _num((drops.get("top") or {}).get("sample_accuracy"))
        rand_drop = _num((drops.get("random") or {}).get("sample_accuracy"))
        row.figure = (
            f"{len(heads.get('selected', []))} heads; {base:.3f} / {top:.3f} / {rand:.3f} ± {sd:.3f} "
            f"({len(draws)} draws); first token {check['none']['first_token_accuracy']:.3f} / "
            f"{check['top']['first_token_accuracy']:.3f} / {check['random']['first_token_accuracy']:.3f}"
        )
        if base < 0.5:
            row.verdict = f"not readable: unmasked accuracy {base:.2f} < 0.5"
        elif top_drop is not None and rand_drop is not None:
            ok = top_drop >= 0.8 and rand_drop <= 0.2
            row.verdict = (
                f"{'as expected' if ok else 'not as expected'}: drop {100 * top_drop:.0f}% (top) vs "
                f"{100 * rand_drop:.0f}% (random)"
            )
    ai = results.get("attention_influence") or {}
    length = SummaryRow(
        "AttentionInfluence",
        "selected top 20% per domain vs the rest: mean document length (characters)",
        expectation="selected documents ~2x longer",
    )
    ratios = [
        s.get("length_ratio") for s in (ai.get("per_domain") or {}).values() if _num(s.get("length_ratio"))
    ]
    if ratios:
        length.figure = (
            f"ratio {sum(ratios) / len(ratios):.2f} (per domain {min(ratios):.2f}-{max(ratios):.2f})"
        )
        mean = sum(ratios) / len(ratios)
        length.verdict = "longer" if mean > 1.1 else ("shorter" if mean < 0.9 else "no length difference")
    return [row, length]


def _setting_sentence(comp: dict, base_mean: float | None, seeds: int, tokens: int) -> str:
    """How far the students' setting resolves one arm's effect (one sentence): decided, or the smallest effect
    it could detect (80% power) given the observed paired spread."""
    where = f"{seeds} seeds x {tokens:,} update tokens of a from-scratch student"
    if comp.get("verdict") in ("better", "worse"):
        return f"decided at {where}; says nothing about downstream gains of a large model"
    mde = comp.get("detectable_effect")
    if mde is None:
        return f"too few seeds at {where} to estimate what could be detected"
    share = f" ({100 * mde / base_mean:.1f}% of the baseline)" if base_mean else ""
    return f"smallest detectable effect {mde:.4f} bpb{share}: smaller effects go unseen at {where}"


def _student_rows(results: dict) -> list[SummaryRow]:
    """Rows built by the ``compare`` study of the students stage: per arm the paired difference to the baseline
    with its 95% interval, the verdict with what the setting can show, and the cost ratio."""
    from ..compare.stats import paired_comparison
    from .stage_students import ARMS

    students = results.get("students") or {}
    arms = students.get("arms") or {}
    base = arms.get("baseline")
    base_stat = (base or {}).get("metrics", {}).get("heldout_bpb")
    rows = [
        SummaryRow(
            "Baseline student",
            "held-out clean bits per byte, plain Trainer on the clean + low-quality pool",
            _spread({"mean": base_stat["mean"], "std": base_stat["sd"], "values": base_stat["values"]})
            if base_stat
            else NOT_COMPUTED,
            "the reference for the students below",
            "reference" if base_stat else NOT_COMPUTED,
        )
    ]
    seeds, tokens = len(students.get("seeds") or []), students.get("update_tokens") or 0
    for name, (method, expectation, scope) in ARMS.items():
        arm = arms.get(name)
        row = SummaryRow(
            method,
            "held-out clean bits per byte vs the baseline at equal update tokens (paired by seed, 95% interval)",
            expectation=expectation,
        )
        comp = (arm or {}).get("vs_baseline", {}).get("heldout_bpb")
        if comp and comp.get("difference") is not None and base_stat:
            ci = comp.get("ci")
            interval = f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""
            row.figure = (
                f"{arm['metrics']['heldout_bpb']['mean']:.4f}; difference {comp['difference']:+.4f}{interval}; "
                f"cost x{arm['cost']['ratio_to_baseline_training']:.2f} of baseline training"
            )
            row.verdict = (
                f"{comp['verdict']} -- {_setting_sentence(comp, base_stat['mean'], seeds, tokens)}. {scope}"
            )
        elif name in (students.get("skipped_arms") or {}):
            row.figure = f"{NOT_COMPUTED}: {students['skipped_arms'][name]}"
        rows.append(row)
        per_seed = (arm or {}).get("per_seed") or []
        if name == "meco" and per_seed and "heldout_bpb_own_url" in per_seed[0]:
            own = [r["heldout_bpb_own_url"] for r in per_seed]
            wrong = [r["heldout_bpb_unrelated_url"] for r in per_seed]
            verdict = paired_comparison(own, wrong)
            ci = verdict.get("ci")
            interval = f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""
            meco = SummaryRow(
                "MeCo",
                "conditional held-out bits per byte: own URL vs unrelated URL (paired by seed, 95% interval)",
                f"{statistics.fmean(own):.4f} vs {statistics.fmean(wrong):.4f}; difference "
                f"{verdict['difference']:+.4f}{interval}; no extra training (two measurements of the MeCo student)",
                "own URL lower than a wrong URL",
            )
            label = {"better": "own URL lower", "worse": "own URL higher"}.get(verdict["verdict"], verdict["verdict"])
            meco.verdict = (
                f"{label} -- {_setting_sentence(verdict, statistics.fmean(wrong), seeds, tokens)}. It can show "
                "whether the student reads the URL after the 10% cooldown; it cannot show which metadata helps "
                "downstream."
            )
            rows.append(meco)
    return rows


def _whisperer_rows(results: dict) -> list[SummaryRow]:
    dw = results.get("data_whisperer") or {}
    auroc = SummaryRow(
        "Data Whisperer",
        "AUROC of score vs tier (high vs low) on a tier-stratified pool; invalid-group share",
        expectation="AUROC > 0.6; invalid groups <= 20%",
    )
    value, invalid = _num(dw.get("auroc_high_vs_low")), _num(dw.get("invalid_group_share"))
    if invalid is not None:
        auroc.figure = (
            (f"AUROC {value:.3f}" if value is not None else f"AUROC {NOT_COMPUTED}")
            + f"; invalid {100 * invalid:.0f}% of {dw.get('dw_stats', {}).get('groups')} groups; pool {dw.get('pool_size')}"
        )
        if value is None:
            auroc.verdict = "not readable: no example scored"
        else:
            auroc.verdict = ("AUROC as expected" if value > 0.6 else "AUROC below expectation") + (
                "; invalid share as expected" if invalid <= 0.2 else "; too many invalid groups"
            )
    tune = SummaryRow(
        "Data Whisperer",
        "LoRA fine-tuning of SmolLM2: held-out gold loss, top 10% vs random 10% (mean ± sd over seeds) vs top 30% vs "
        "full; STR",
        expectation="top 10% beats random 10% and approaches full; STR 0.03-0.25",
    )
    comparison = dw.get("comparison") or {}
    if "selected" in comparison and "random" in comparison:
        sel, rnd = comparison["selected"], comparison["random"]
        parts = [f"{sel['gold_loss']:.4f} vs {rnd['gold_loss']:.4f} ± {rnd.get('gold_loss_std', 0):.4f}"]
        if "selected_large" in comparison:
            parts.append(f"top 30% {comparison['selected_large']['gold_loss']:.4f}")
        if "full" in comparison:
            parts.append(f"full {comparison['full']['gold_loss']:.4f}")
        str_value = _num(comparison.get("STR"))
        parts.append(f"STR {str_value:.3f}" if str_value is not None else f"STR {NOT_COMPUTED}")
        tune.figure = "; ".join(parts)
        if not dw.get("selection_valid", True):
            tune.verdict = "not readable: too few examples scored for a selection"
        else:
            margin = rnd["gold_loss"] - sel["gold_loss"]
            noise = rnd.get("gold_loss_std", 0.0)
            tune.verdict = (
                "selected better than random" if margin > noise else
                "selected worse than random" if -margin > noise else "no difference detectable at this budget"
            )  # fmt: skip
    return [auroc, tune]


def _evaluation_rows(results: dict) -> list[SummaryRow]:
    ev = results.get("evaluation") or {}
    row = SummaryRow(
        "Evaluation",
        "SmolLM2-135M-Instruct, ARC-Easy 0-shot acc / acc_norm (hf-select harness)",
        expectation="published SmolLM2-135M-Instruct (bf16) scores; this copy is Q4_1 dequantised",
    )
    arc = ((ev.get("results") or {}).get("SmolLM2-135M-Instruct") or {}).get("arc_easy") or {}
    if _num(arc.get("acc")) is not None:
        row.figure = f"acc {arc['acc']:.3f}, acc_norm {arc.get('acc_norm', float('nan')):.3f} ({ev.get('limit_per_task')} items)"
        row.verdict = "measured"
    agreement = ev.get("lm_eval_agreement") or {}
    agree = SummaryRow(
        "Evaluation", "agreement of acc / acc_norm with lm-evaluation-harness 0.4.13", expectation="identical"
    )
    if agreement.get("status") == "computed":
        task = next(iter(agreement["result"].values()))
        agree.figure = (
            f"{agreement['task']} ({agreement['items']} items): max loglik diff {task.get('max_loglik_diff')}"
        )
        agree.verdict = "identical" if task.get("agree") else "differs"
    elif agreement:
        agree.figure = agree.verdict = agreement.get("status", NOT_COMPUTED)
    return [row, agree]


def summary_rows(results: dict[str, dict]) -> list[SummaryRow]:
    """The summary rows from the stage results (missing stages give "not computed" rows)."""
    return (
        _retrieval_rows(results)
        + _student_rows(results)
        + _whisperer_rows(results)
        + _evaluation_rows(results)
    )


def summary_html(results: dict[str, dict]) -> str:
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (r.method, r.measured, r.figure, r.expectation, r.verdict)
        )
        + "</tr>"
        for r in summary_rows(results)
    )
    return (
        "<h2>Summary: what each method buys on a real model</h2>"
        "<table><tr><th>method</th><th>measured</th><th>figure (spread)</th><th>paper's expectation</th>"
        f"<th>verdict</th></tr>{rows}</table>"
    )
