"""Runs the stages of the main job in order, reusing finished stages and reporting missing ones as pending.

A stage is a module ``hf_select.demo.stage_<name>`` with ``TITLE`` (str), ``run(ctx) -> dict`` (a JSON-ready
summary; artifacts go under ``ctx.stage_dir(name)``) and optionally ``report_html(ctx, result) -> str`` (an
HTML fragment for the report). A stage whose module does not exist is shown as pending, never faked. A finished stage's
summary is its completion marker (:mod:`hf_select.resume`: written atomically, a cut one is redone), reused
only by a run of the same mode and seed.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
import traceback
from dataclasses import dataclass
from typing import Any

from transformers.utils import logging

from ..resume import read_marker, write_marker
from .context import DemoContext

logger = logging.get_logger("hf_select.demo")

STAGES: tuple[str, ...] = (
    "world",
    "pretrained_model",
    "retrieval_heads",
    "attention_influence",
    "students",
    "evaluation",
    "data_whisperer",
)


def pin_threads() -> int:
    """Give torch this process's share of the cores and keep tokenizers single-threaded
    (:func:`hf_select.threads.set_torch_threads`); returns the thread count."""
    from hf_select.threads import set_torch_threads

    return set_torch_threads()


@dataclass
class StageOutcome:
    name: str
    status: str  # "done", "reused", "pending", "failed"
    title: str = ""
    result: dict[str, Any] | None = None
    seconds: float = 0.0
    error: str | None = None


def stage_module(name: str):
    """The stage's module, or None when it does not exist."""
    module_name = f"hf_select.demo.stage_{name}"
    if importlib.util.find_spec(module_name) is None:
        return None
    return importlib.import_module(module_name)


def run_stage(ctx: DemoContext, name: str, force: bool = False) -> StageOutcome:
    module = stage_module(name)
    if module is None:
        return StageOutcome(name, "pending", title=name.replace("_", " "))
    marker = ctx.output_dir / "stages" / f"{name}.json"
    title = getattr(module, "TITLE", name)
    run_mode = {"quick": ctx.quick, "seed": ctx.seed}
    result = None if force else read_marker(marker)
    if result is not None:
        if result.get("run_mode") == run_mode:
            ctx.results[name] = result
            logger.warning(f"[demo] {title}: reused ({marker})")
            return StageOutcome(name, "reused", title, result)
        # a quick run's results never stand in for a full run's (nor the reverse, nor another seed's)
        logger.warning(
            f"[demo] {title}: {marker} is from another run mode ({result.get('run_mode')}); rerunning"
        )
    logger.warning(f"[demo] {title}: running")
    start = time.perf_counter()
    try:
        result = module.run(ctx) or {}
    except Exception as exc:  # a broken stage is reported, later independent stages still run
        logger.error(f"[demo] {title}: failed: {exc}")
        return StageOutcome(name, "failed", title, None, time.perf_counter() - start, traceback.format_exc())
    seconds = time.perf_counter() - start
    result = {**result, "seconds": round(seconds, 2), "run_mode": run_mode}
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_marker(marker, result)
    ctx.results[name] = result
    logger.warning(f"[demo] {title}: done in {seconds:.1f}s")
    return StageOutcome(name, "done", title, result, seconds)


def run_demo(
    ctx: DemoContext, stages: tuple[str, ...] = STAGES, force: tuple[str, ...] = ()
) -> list[StageOutcome]:
    """Run ``stages`` in order and write ``ctx.output_dir / 'report.html'``."""
    from .report import write_report

    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    pin_threads()
    outcomes = [run_stage(ctx, name, force=name in force) for name in stages]
    path = write_report(ctx, outcomes)
    logger.warning(f"[demo] report: {path}")
    return outcomes
