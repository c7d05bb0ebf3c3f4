"""What a replication function sees (:class:`ReplicationContext`) and returns (:class:`Section` of :class:`Row`)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers.utils import logging

from ..compare.report import HEADLINE

logger = logging.get_logger(__name__)


@dataclass
class Row:
    """One line of a method's results table (every field a string, as shown)."""

    measure: str
    arm: str
    paper: str
    ours: str
    interval: str = ""
    verdict: str = ""
    detectable: str = ""


@dataclass
class Section:
    """A method's part of ``docs/results.md`` (markdown strings; ``rows`` the results table)."""

    setting: str
    rows: list[Row]
    body: str = ""
    checks: str = ""
    cost: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": [asdict(r) if isinstance(r, Row) else dict(r) for r in self.rows]}


@dataclass
class ReplicationContext:
    """Paths, parsed settings and helpers of one replication run (built by :func:`hf_select.replicate.run_replication`).

    ``step(name, fn)`` computes ``fn()`` (JSON-able) once and stores it in ``output_dir/steps/<name>.json``: a
    re-run reads it back; its wall seconds are kept in ``seconds`` for the cost paragraph.
    """

    name: str
    options: Any
    study: dict[str, Any]
    paper: dict[str, Any]
    profile: str
    output_dir: Path
    cache_dir: Path
    seed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def world_dir(self) -> Path:
        return self.cache_dir / "world"

    @property
    def model_dir(self) -> Path:
        """SmolLM2-135M-Instruct as safetensors (built by ``make demo`` / ``hf-select build-demo``)."""
        return self.cache_dir / "models" / "SmolLM2-135M-Instruct"

    def step(self, name: str, fn) -> Any:
        from ..resume import read_marker, write_marker

        path = self.output_dir / "steps" / f"{name}.json"
        stored = read_marker(path)
        if stored is not None and "value" in stored:
            self.seconds[name] = stored.get("seconds", 0.0)
            return stored["value"]
        logger.warning(f"[replicate {self.name}] step {name}")
        start = time.perf_counter()
        value = fn()
        self.seconds[name] = time.perf_counter() - start
        path.parent.mkdir(parents=True, exist_ok=True)
        write_marker(path, {"value": value, "seconds": self.seconds[name]})
        return value

    def study_config(self, name: str = "compare", **overrides):
        """A :class:`~hf_select.compare.StudyConfig` from the file's ``study`` plus ``overrides``, writing to
        ``output_dir/<name>``."""
        from ..compare import StudyConfig

        return StudyConfig(**{**self.study, **overrides, "output_dir": str(self.output_dir / name)})

    def run_study(self, config) -> dict[str, Any]:
        """:func:`hf_select.compare.run_study` (every (arm, seed) run resumable). Its cost goes to
        ``seconds['study:<folder>']``: the recorded training, measurement and selection seconds of its runs, so a
        resumed or reused study reports the work it took, not the time to read it back."""
        from ..compare import run_study

        results = run_study(config)
        seconds = 0.0
        for arm in results["arms"].values():
            seconds += arm["cost"].get("selection_seconds", 0.0)
            seconds += sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in arm["runs"])
        self.seconds[f"study:{Path(config.output_dir).name}"] = seconds
        return results

    def compare_rows(self, results: dict[str, Any], metric: str = HEADLINE, paper: str = "",
                     measure: str | None = None) -> list[Row]:  # fmt: skip
        """One :class:`Row` per arm other than the baseline: the paired difference in ``metric`` to the
        baseline with its interval, verdict and (when undetermined) smallest detectable effect."""
        from ..compare.report import first_screen_rows

        base = results["arms"][results["baseline"]]["metrics"].get(metric, {})
        rows = []
        for row in first_screen_rows(results, metric):
            if row["arm"] == results["baseline"]:
                continue
            stat = results["arms"][row["arm"]]["metrics"].get(metric, {})
            ours = f"{row['difference']} ({stat.get('mean', float('nan')):.4f} vs {base.get('mean', float('nan')):.4f})"
            rows.append(Row(
                measure=measure or f"{metric} vs {results['baseline']}", arm=row["arm"], paper=paper, ours=ours,
                interval=row.get("ci", ""), verdict=row.get("verdict", ""),
                detectable=row.get("detectable", "") if row.get("verdict") == "undetermined" else "",
            ))  # fmt: skip
        return rows

    def figure(self, name: str, png: bytes) -> str:
        """Store a PNG under ``output_dir/figures/``; returns the path the results page links (the renderer
        copies the figure next to the page)."""
        from ..resume import write_atomic

        folder = self.output_dir / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / f"{name}.png", png)
        return f"results/{self.name}/{name}.png"
