"""Run one replication (:func:`run_replication`) and render the results page from every finished one
(:func:`render_results`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from transformers.utils import logging

from ..fingerprint import fingerprint
from ..resume import read_marker, write_atomic, write_marker
from .config import ReplicationConfig, replication_types
from .context import ReplicationContext, Section

logger = logging.get_logger(__name__)

# order of the sections on the page: the mission's order of the methods
METHOD_ORDER = ("attention_influence", "slm", "meco", "data_whisperer", "opus")


def git_commit(cwd: str | Path = ".") -> str:
    """``git rev-parse --short HEAD`` of ``cwd``, with ``-dirty`` when tracked files differ from it; ``unknown``
    outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (user + system): with the wall-clock, it shows how
    much of a run's time was spent waiting for cores another job held."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def section_fingerprint(config: ReplicationConfig, study: dict, options: dict) -> str:
    return fingerprint(config.method, config.title, config.paper, study, options, config.profile)


def run_replication(config: ReplicationConfig, command: str | None = None) -> dict[str, Any]:
    """Run (or resume, or reuse) ``config``'s replication; store its section in
    ``output_dir/<method>/section.json`` and return that record.

    Wall-clock seconds accumulate over the invocations that worked on it (``elapsed.json``, updated even when an
    invocation stops on an error or a signal), so a resumed replication reports its whole cost.
    """
    study, options = config.resolved()
    folder = Path(config.output_dir) / config.method
    fp = section_fingerprint(config, study, options)
    marker = folder / "section.json"
    stored = read_marker(marker)
    if stored is not None and stored.get("fingerprint") == fp:
        logger.warning(f"[replicate {config.method}] finished earlier, reusing {marker}")
        return stored
    if stored is not None:
        logger.warning(f"[replicate {config.method}] {marker} is of other settings; running again (finished runs whose settings did not change are reused)")
    folder.mkdir(parents=True, exist_ok=True)
    ctx = ReplicationContext(
        name=config.method, options=config.options_object(options), study=study, paper=config.paper,
        profile=config.profile, output_dir=folder, cache_dir=Path(config.cache_dir),
    )  # fmt: skip
    elapsed_path = folder / "elapsed.json"
    before = read_marker(elapsed_path) or {}
    elapsed, cpu = before.get("seconds", 0.0), before.get("cpu_seconds", 0.0)
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    try:
        section = replication_types()[config.method].run(ctx)
    finally:
        elapsed += time.perf_counter() - start
        cpu += _cpu_seconds() - cpu_start
        write_marker(elapsed_path, {"seconds": elapsed, "cpu_seconds": cpu})
    if not isinstance(section, Section):
        raise TypeError(f"replication {config.method!r} returned {type(section).__name__}, not a Section")
    record = {
        "fingerprint": fp, "method": config.method, "title": config.title or config.method, "paper": config.paper,
        "profile": config.profile, "section": section.to_dict(), "seconds": dict(ctx.seconds),
        "wall_seconds": elapsed, "cpu_seconds": cpu, "load_average": os.getloadavg()[1], "commit": git_commit(),
        "command": command or f"hf-select replicate benchmarks/replications/{config.method}.yaml"
        + (f" --profile {config.profile}" if config.profile != "cpu" else ""),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }  # fmt: skip
    write_marker(marker, record)
    return record


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


ROW_COLUMNS = (("measure", "measure"), ("arm", "arm"), ("paper", "paper"), ("ours", "ours"),
               ("interval", "95% interval"), ("verdict", "verdict"), ("detectable", "smallest detectable effect"))  # fmt: skip


def rows_table(rows: list[dict], method: str | None = None) -> str:
    """The rows as a markdown table (with a method column when ``method`` is given)."""
    columns = ((("method", "method"),) if method is not None else ()) + ROW_COLUMNS
    lines = ["| " + " | ".join(label for _, label in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        values = {"method": method, **row}
        lines.append("| " + " | ".join(_cell(values.get(key, "")) for key, _ in columns) + " |")
    return "\n".join(lines)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _verdicts(rows: list[dict]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        word = row.get("verdict") or ""
        key = word if word in ("better", "worse", "undetermined") else "descriptive"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} {counts[k]}" for k in ("better", "worse", "undetermined", "descriptive") if k in counts)


def render_results(output_dir: str | Path, results: str | Path, notes_dir: str | Path | None = None) -> Path:
    """Write ``results`` (markdown) from every ``section.json`` under ``output_dir`` and copy their figures next
    to it (``results/<method>/``). ``notes_dir/<method>.md``, when present, is shown under the method's section
    as the reading written after the run."""
    output_dir, results = Path(output_dir), Path(results)
    records = [r for r in (read_marker(p) for p in sorted(output_dir.glob("*/section.json"))) if r]
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    records.sort(key=lambda r: (order.get(r["method"], len(order)), r["method"]))
    results.parent.mkdir(parents=True, exist_ok=True)
    for record in records:
        figures = output_dir / record["method"] / "figures"
        if figures.is_dir():
            target = results.parent / "results" / record["method"]
            target.mkdir(parents=True, exist_ok=True)
            for png in figures.glob("*.png"):
                shutil.copy2(png, target / png.name)
    missing = [m for m in METHOD_ORDER if m not in {r["method"] for r in records}]
    total = sum(r["wall_seconds"] for r in records)
    parts = [
        "# Replications: each paper's direction in its own setting, scaled down",
        "",
        "Produced by `make replicate` (one `hf-select replicate benchmarks/replications/<method>.yaml` per method; "
        "each is one or more `hf-select compare` studies, see docs/compare.md). Every arm of every run is reported, "
        "including those that go against the paper. An interval is the paired-t 95% interval over seeds of the "
        "difference to the named baseline; *undetermined* means it contains 0, and then the smallest effect these "
        "seeds could detect (80% power) is given.",
        "",
        f"Wall-clock of the replications below: {_minutes(total)} in all"
        + (f"; not run yet: {', '.join(missing)}." if missing else "."),
        "",
        "| method | verdicts (rows vs the named baseline) | wall-clock | commit | profile |",
        "|---|---|---|---|---|",
    ]
    for record in records:
        parts.append(
            f"| [{record['title']}](#{_anchor(record['title'])}) | {_verdicts(record['section']['rows'])} | "
            f"{_minutes(record['wall_seconds'])} | `{record['commit']}` | {record['profile']} |"
        )
    parts.append("")
    for record in records:
        s, paper = record["section"], record["paper"]
        parts += [f"## {record['title']}", "", f"**Setting (ours).** {s['setting']}", ""]
        if paper:
            parts += ["**The paper.** " + " ".join(f"*{k}:* {v}" for k, v in paper.items()), ""]
        parts += [rows_table(s["rows"]), ""]
        if s.get("body"):
            parts += [s["body"], ""]
        if s.get("checks"):
            parts += ["**Checks.** " + s["checks"], ""]
        notes = Path(notes_dir) / f"{record['method']}.md" if notes_dir else None
        if notes is not None and notes.is_file():
            parts += ["**Reading (written after the run).** " + notes.read_text().strip(), ""]
        steps = ", ".join(f"{k} {v:.0f} s" for k, v in record.get("seconds", {}).items())
        parts += [
            "**Cost.** " + (s.get("cost") or "") + (f" Steps (first measured): {steps}." if steps else ""),
            "",
            f"**Run.** `{record['command']}` at commit `{record['commit']}`, profile `{record['profile']}`, "
            f"{_minutes(record['wall_seconds'])} wall-clock"
            + (f" ({_minutes(record['cpu_seconds'])} of CPU time, 5-minute load average {record['load_average']:.1f} "
               "at the end)" if "cpu_seconds" in record else "")
            + f", finished {record['finished']}.",
            "",
        ]
    write_atomic(results, "\n".join(parts))
    return results


def _anchor(title: str) -> str:
    """GitHub's anchor of a markdown heading."""
    import re

    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def main_command() -> str:
    return "hf-select " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("hf-select") else ""
