"""The HTML report of the main job: one section per stage, pending stages shown as such."""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..figures import img_html, new_figure
from .context import DemoContext

__all__ = ["figure_html", "loss_curves_html", "new_figure", "write_report"]


def _section(ctx: DemoContext, outcome) -> str:
    from .runner import stage_module

    head = f"<h2>{html.escape(outcome.title)} <small>[{outcome.status}]</small></h2>"
    if outcome.status == "pending":
        return head + "<p><em>Pending: this stage's module is not installed.</em></p>"
    if outcome.status == "failed":
        return head + f"<pre>{html.escape(outcome.error or '')}</pre>"
    module = stage_module(outcome.name)
    if hasattr(module, "report_html"):
        try:
            return head + module.report_html(ctx, outcome.result)
        except Exception as exc:  # a broken fragment must not lose the rest of the report
            return head + f"<p>report fragment failed: {html.escape(repr(exc))}</p>"
    return head + f"<pre>{html.escape(json.dumps(outcome.result, indent=2, default=str))}</pre>"


def _overview(outcomes) -> str:
    """One row per stage: status and seconds (a reused stage shows the time of the run that made it)."""
    rows = "".join(
        f"<tr><td>{html.escape(o.title)}</td><td>{o.status}</td>"
        f"<td>{(o.result or {}).get('seconds', o.seconds) if o.status in ('done', 'reused') else ''}</td></tr>"
        for o in outcomes
    )
    return f"<table><tr><th>stage</th><th>status</th><th>seconds</th></tr>{rows}</table>"


def write_report(ctx: DemoContext, outcomes) -> Path:
    from .summary import summary_html

    results = {o.name: o.result for o in outcomes if o.result is not None}
    body = (
        summary_html(results)
        + _overview(outcomes)
        + "\n".join(_section(ctx, outcome) for outcome in outcomes)
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>hf-select demo report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px}img{max-width:100%}</style></head><body>"
        f"<h1>hf-select demo report</h1><p>mode: {'quick' if ctx.quick else 'full'}</p>{body}</body></html>"
    )
    path = ctx.output_dir / "report.html"
    path.write_text(page)
    return path


def figure_html(fig, alt: str = "") -> str:
    """The figure as an embedded base64 PNG ``<img>``; the figure is closed (:func:`hf_select.figures.img_html`)."""
    return img_html(fig, alt=alt)


def loss_curves_html(curves: dict[str, list], title: str, ylabel: str = "training loss") -> str:
    """Line plot of ``{label: [(step, loss), ...]}`` as an embedded image."""
    fig, ax = new_figure()
    for label, points in curves.items():
        if points:
            ax.plot(*zip(*points), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(curves) > 1:
        ax.legend()
    return figure_html(fig, alt=title)
