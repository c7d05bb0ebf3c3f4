"""The results of a study: per arm and metric the mean and sd over seeds, the paired difference to the baseline
with its confidence interval, verdict and smallest detectable effect, the cost of each arm; and the page that
shows them (``results.json``, ``report.html``, ``figures/*.png``).

Cost of an arm: wall seconds and tokens of its one-off selection / scoring work (``selection``), of its training
runs (mean per seed; for mechanisms that score during training, OPUS and online SLM, the extra forward-only
tokens are counted as ``scoring_tokens`` and their time is inside the training seconds), and the ratio of
(selection + training) seconds to the baseline's training seconds.
"""

from __future__ import annotations

import html
import json
import statistics
from pathlib import Path
from typing import Any

from ..figures import figure_png, img_html, new_figure
from .config import ArmConfig, StudyConfig
from .stats import mean_sd, paired_comparison

HEADLINE = "heldout_bpb"


def _mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else 0.0


def summarize(config: StudyConfig, arms: list[tuple[str, ArmConfig]], runs: dict[str, list[dict]],
              selection: dict[str, dict]) -> dict[str, Any]:  # fmt: skip
    """``results.json``: the study, and per arm its runs, metrics, paired comparison to the baseline and cost."""
    from .runner import lower_is_better

    base_runs = {r["seed"]: r for r in runs[config.baseline]}
    base_train = _mean(r["train_seconds"] for r in base_runs.values()) or float("nan")
    out_arms: dict[str, Any] = {}
    for kind, arm in arms:
        arm_runs = runs[arm.name]
        metrics = sorted({m for r in arm_runs for m in r["metrics"]})
        summary = {m: mean_sd([r["metrics"][m] for r in arm_runs if m in r["metrics"]]) for m in metrics}
        comparison = {}
        if arm.name != config.baseline:
            for m in metrics:
                pairs = [(r["metrics"][m], base_runs[r["seed"]]["metrics"][m]) for r in arm_runs
                         if m in r["metrics"] and r["seed"] in base_runs and m in base_runs[r["seed"]]["metrics"]]
                comparison[m] = paired_comparison([a for a, _ in pairs], [b for _, b in pairs],
                                                  lower_is_better(m), config.alpha, config.power)  # fmt: skip
        sel = selection.get(arm.name, {"seconds": 0.0, "tokens": 0})
        train_seconds = _mean(r["train_seconds"] for r in arm_runs)
        cost = {
            "selection_seconds": sel["seconds"], "selection_tokens": sel["tokens"],
            "train_seconds_per_seed": train_seconds,
            "update_tokens_per_seed": _mean(r["update_tokens"] for r in arm_runs),
            "tokens_seen_per_seed": _mean(r["tokens_seen"] for r in arm_runs),
            "scoring_tokens_per_seed": _mean(r.get("scoring_tokens", 0) for r in arm_runs),
            "eval_seconds_per_seed": _mean(r["eval_seconds"] for r in arm_runs),
            # one-off selection spread over the seeds it serves, plus training, per seed
            "ratio_to_baseline_training": (sel["seconds"] / max(len(arm_runs), 1) + train_seconds) / base_train,
        }  # fmt: skip
        out_arms[arm.name] = {
            "type": kind, "config": {k: v for k, v in vars(arm).items() if k != "name"},
            "seeds": [r["seed"] for r in arm_runs], "metrics": summary, "vs_baseline": comparison, "cost": cost,
            "runs": arm_runs,
        }  # fmt: skip
    return {
        "study": {k: v for k, v in vars(config).items() if k not in ("plan",)},
        "update_tokens_per_run": config.update_tokens,
        "baseline": config.baseline,
        "headline": HEADLINE,
        "arms": out_arms,
    }


def _fmt(x: float | None, digits: int = 4, sign: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def first_screen_rows(results: dict[str, Any], metric: str = HEADLINE) -> list[dict[str, str]]:
    """Per arm: the headline metric (mean +- sd), the paired difference with its interval, the verdict, the
    smallest detectable effect and the cost ratio -- as strings, for the report and the console."""
    rows = []
    for name, arm in results["arms"].items():
        stat = arm["metrics"].get(metric)
        comp = arm["vs_baseline"].get(metric)
        row = {"arm": name, "type": arm["type"],
               metric: f"{_fmt(stat['mean'])} ± {_fmt(stat['sd'])}" if stat else "-"}  # fmt: skip
        if name == results["baseline"]:
            row.update(difference="(baseline)", ci="", verdict="reference", detectable="")
        elif comp:
            ci = comp["ci"]
            row.update(
                difference=_fmt(comp["difference"], sign=True),
                ci=f"[{_fmt(ci[0], sign=True)}, {_fmt(ci[1], sign=True)}]" if ci else "-",
                verdict=comp["verdict"],
                detectable=_fmt(comp["detectable_effect"]) if comp["detectable_effect"] is not None else "-",
            )
        row["cost_ratio"] = f"{arm['cost']['ratio_to_baseline_training']:.2f}"
        rows.append(row)
    return rows


FIRST_SCREEN_COLUMNS = (
    ("arm", "arm"), ("type", "mechanism"), (HEADLINE, "held-out bpb (mean ± sd)"), ("difference", "paired difference"),
    ("ci", "95% interval"), ("verdict", "verdict"), ("detectable", "smallest detectable effect"),
    ("cost_ratio", "cost / baseline training"),
)  # fmt: skip


def first_screen_table(results: dict[str, Any]) -> str:
    """The first-screen rows as a plain-text table (the console summary of ``hf-select compare``)."""
    rows = first_screen_rows(results)
    widths = {key: max(len(label), *(len(str(r.get(key, ""))) for r in rows)) for key, label in FIRST_SCREEN_COLUMNS}
    lines = ["  ".join(label.ljust(widths[key]) for key, label in FIRST_SCREEN_COLUMNS)]
    lines += ["  ".join(str(r.get(key, "")).ljust(widths[key]) for key, _ in FIRST_SCREEN_COLUMNS) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def loss_curves_png(results: dict[str, Any]) -> bytes:
    """Training loss of every arm on one figure (mean over seeds per logged step, one line per arm)."""
    fig, ax = new_figure(figsize=(7, 4))
    for name, arm in results["arms"].items():
        by_step: dict[int, list[float]] = {}
        for run in arm["runs"]:
            for step, loss in run["loss_curve"]:
                by_step.setdefault(step, []).append(loss)
        steps = sorted(by_step)
        ax.plot(steps, [statistics.fmean(by_step[s]) for s in steps], label=name, marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (mean over seeds)")
    ax.set_title("Training loss, all arms (losses of different objectives are not comparable)", fontsize=9)
    ax.legend(fontsize=8)
    return figure_png(fig)


def differences_png(results: dict[str, Any], metric: str = HEADLINE) -> bytes:
    """Paired difference to the baseline with its confidence interval, one line per arm."""
    fig, ax = new_figure(figsize=(7, 0.6 + 0.5 * max(1, len(results["arms"]) - 1)))
    names = [n for n in results["arms"] if n != results["baseline"]]
    for i, name in enumerate(names):
        comp = results["arms"][name]["vs_baseline"].get(metric) or {}
        if comp.get("difference") is None:
            continue
        ci = comp.get("ci") or [comp["difference"], comp["difference"]]
        ax.plot(ci, [i, i], color="tab:blue")
        ax.plot([comp["difference"]], [i], "o", color="tab:blue")
    ax.axvline(0, color="grey", linestyle="--")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel(f"{metric}: arm - baseline (paired, 95% interval); lower is better")
    return figure_png(fig)


def _table(rows: list[dict[str, str]], headers: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(key, '')))}</td>" for key, _ in headers) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def report_html(results: dict[str, Any], figures: dict[str, bytes]) -> str:
    """One page: first-screen table, per-metric table, costs, the figures and the study's settings."""
    study = results["study"]
    seeds = study["seeds"]
    first = _table(first_screen_rows(results), list(FIRST_SCREEN_COLUMNS))
    metric_rows = []
    for name, arm in results["arms"].items():
        for metric, stat in arm["metrics"].items():
            comp = arm["vs_baseline"].get(metric) or {}
            ci = comp.get("ci")
            metric_rows.append({
                "arm": name, "metric": metric, "value": f"{_fmt(stat['mean'])} ± {_fmt(stat['sd'])}",
                "difference": _fmt(comp.get("difference"), sign=True) if comp else "",
                "ci": f"[{_fmt(ci[0], sign=True)}, {_fmt(ci[1], sign=True)}]" if ci else "",
                "verdict": comp.get("verdict", ""), "detectable": _fmt(comp.get("detectable_effect")) if comp else "",
            })  # fmt: skip
    metrics = _table(metric_rows, [("arm", "arm"), ("metric", "metric"), ("value", "mean ± sd"),
                                   ("difference", "paired difference"), ("ci", "95% interval"),
                                   ("verdict", "verdict"), ("detectable", "smallest detectable effect")])  # fmt: skip
    cost_rows = [
        {"arm": name, **{k: (f"{v:.1f}" if "seconds" in k else f"{v:.2f}" if "ratio" in k else f"{int(v):,}")
                         for k, v in arm["cost"].items()}}
        for name, arm in results["arms"].items()
    ]  # fmt: skip
    costs = _table(cost_rows, [
        ("arm", "arm"), ("selection_seconds", "selection s"), ("selection_tokens", "selection tokens"),
        ("train_seconds_per_seed", "training s / seed"), ("update_tokens_per_seed", "update tokens / seed"),
        ("tokens_seen_per_seed", "tokens counted / seed"), ("scoring_tokens_per_seed", "in-training scoring tokens / seed"),
        ("ratio_to_baseline_training", "cost / baseline training"),
    ])  # fmt: skip
    images = "".join(f"<p>{img_html(png, alt=name)}</p>" for name, png in figures.items())
    settings = html.escape(json.dumps(study, indent=1, default=str))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>hf-select compare</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;margin:8px 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style></head><body>"
        f"<h1>hf-select compare</h1><p>{len(results['arms'])} arms x {len(seeds)} seeds (paired: seed s gives every "
        f"arm the same initial weights), {results['update_tokens_per_run']:,} update tokens per run. Verdict: "
        "<b>better</b> / <b>worse</b> when the paired 95% interval excludes 0, otherwise <b>undetermined</b>; the "
        "smallest detectable effect is what these seeds would detect with power 0.8 given the observed paired "
        f"spread.</p>{first}<h2>Figures</h2>{images}<h2>All metrics</h2>{metrics}<h2>Cost</h2>{costs}"
        f"<h2>Settings</h2><pre>{settings}</pre></body></html>"
    )


def write_report(output_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write ``results.json``, ``figures/loss_curves.png``, ``figures/differences.png`` and ``report.html``."""
    out = Path(output_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figures = {"loss_curves": loss_curves_png(results)}
    if len(results["arms"]) > 1:
        figures["differences"] = differences_png(results)
    for name, png in figures.items():
        (out / "figures" / f"{name}.png").write_bytes(png)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    page = out / "report.html"
    page.write_text(report_html(results, figures))
    return page
