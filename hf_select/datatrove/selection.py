"""Top fraction per domain on datatrove, in two passes, with exactly the rows of
:func:`hf_select.selection.select_top_fraction` (AttentionInfluence keeps the top 20% of each domain,
arXiv 2505.07293 section 4).

Pass 1: :class:`ScoreCollector` (a pass-through step, e.g. right after the scorer) writes every task's scores
per group to ``<scores_folder>/<rank>.json``. Pass 2: :class:`TopFractionFilter` reads them all, runs
:func:`~hf_select.selection.top_fraction_indices` on each group's scores in task order (task 0's documents
first, each task's in reading order: the order of the concatenated per-task outputs), and keeps a document
when its score is above the group's cut-off, or equal to it and among the ties that the exact selection takes
from this task (ties go to earlier positions first). The cut-off is an exact order statistic (the
``1 - fraction`` quantile), not a sketch: the scores of one group must fit in memory (8 bytes a document).

Pass 2 must read the same documents in the same task layout as pass 1 (same number of tasks, each task reading
pass 1's output of the same rank): the filter checks the number of tasks and, at the end of each task, the
number of documents per group, and fails the task on a mismatch.
"""

from __future__ import annotations

import json
import math
from collections import Counter

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from ..errors import InputKeyError

_ALL = "__all__"


def _group_of(doc: Document, by: str | None) -> str:
    if by is None:
        return _ALL
    if by not in doc.metadata:
        raise InputKeyError(f"document {doc.id} has no metadata {by!r} to group by (set by=None to rank globally)")
    return str(doc.metadata[by])


def _score_of(doc: Document, column: str) -> float:
    if column not in doc.metadata:
        raise InputKeyError(f"document {doc.id} has no score {column!r} in its metadata")
    value = doc.metadata[column]
    return math.nan if value is None else float(value)


class ScoreCollector(PipelineStep):
    """Pass-through step that records ``column`` per ``by`` group for :class:`TopFractionFilter`.

    Writes ``<output_folder>/<rank>.json`` (``{"world_size", "groups": {group: [scores in reading order]}}``)
    when its task's input is exhausted, i.e. before the task's completion marker.
    """

    type = "📊 - STATS"
    name = "score collector"

    def __init__(self, output_folder: DataFolderLike, column: str = "ai_score", by: str | None = "domain"):
        super().__init__()
        self.output_folder = get_datafolder(output_folder)
        self.column = column
        self.by = by

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        groups: dict[str, list[float]] = {}
        for doc in data or ():
            groups.setdefault(_group_of(doc, self.by), []).append(_score_of(doc, self.column))
            yield doc
        with self.output_folder.open(f"{rank:05d}.json", "w") as f:
            json.dump({"world_size": world_size, "column": self.column, "by": self.by, "groups": groups}, f)


class TopFractionFilter(BaseFilter):
    """Keep the top ``fraction`` of each ``by`` group by ``column`` (NaN never kept), from the scores
    :class:`ScoreCollector` wrote in pass 1; see the module docstring for the exactness and layout rules.

    Args:
        scores_folder: the ScoreCollector's ``output_folder``.
        fraction: share kept per group (``round(fraction * n)``, at least one; as ``top_fraction_indices``).
        column: score in ``Document.metadata``.
        by: group key in ``Document.metadata`` (None: one global ranking).
        exclusion_writer: optional writer of the dropped documents.
    """

    name = "top fraction per domain"

    def __init__(
        self,
        scores_folder: DataFolderLike,
        fraction: float = 0.2,
        column: str = "ai_score",
        by: str | None = "domain",
        exclusion_writer=None,
    ):
        super().__init__(exclusion_writer)
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        self.scores_folder = get_datafolder(scores_folder)
        self.fraction = fraction
        self.column = column
        self.by = by

    def cutoffs(self, rank: int, world_size: int) -> tuple[dict[str, float], dict[str, int], dict[str, int]]:
        """``(cut-off score, ties to keep in this task, documents of this task)`` per group."""
        import numpy as np

        from ..selection import top_fraction_indices

        files = sorted(self.scores_folder.list_files(glob_pattern="*.json"))
        if len(files) != world_size:
            raise ValueError(
                f"{self.scores_folder.path} holds the scores of {len(files)} tasks; this run has {world_size}: "
                "run the filter with the same number of tasks as the ScoreCollector pass"
            )
        per_task = []
        for name in files:
            with self.scores_folder.open(name) as f:
                data = json.load(f)
            if data["column"] != self.column or data["by"] != self.by:
                raise ValueError(f"{name} collected {data['column']!r} by {data['by']!r}, not {self.column!r} by {self.by!r}")
            per_task.append(data["groups"])
        cut, ties, counts = {}, {}, {}
        for group in dict.fromkeys(g for groups in per_task for g in groups):
            parts = [np.asarray(groups.get(group, []), dtype=np.float64) for groups in per_task]
            scores = np.concatenate(parts)
            chosen = top_fraction_indices(scores, self.fraction)
            counts[group] = len(parts[rank])
            if chosen.size == 0:
                cut[group], ties[group] = math.inf, 0
                continue
            threshold = float(scores[chosen].min())
            start = sum(len(p) for p in parts[:rank])
            mine = chosen[(chosen >= start) & (chosen < start + len(parts[rank]))]
            cut[group] = threshold
            ties[group] = int((scores[mine] == threshold).sum())
        return cut, ties, counts

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self._cut, self._ties, expected = self.cutoffs(rank, world_size)
        self._seen: Counter = Counter()
        self._tied: Counter = Counter()
        yield from super().run(data, rank, world_size)
        seen = {g: n for g, n in self._seen.items() if n}
        if seen != {g: n for g, n in expected.items() if n}:
            raise ValueError(
                f"task {rank} read {dict(seen)} documents per group; pass 1 scored {expected}: the filter must "
                "read the same documents with the same task layout"
            )

    def filter(self, doc: Document) -> bool:
        group = _group_of(doc, self.by)
        score = _score_of(doc, self.column)
        self._seen[group] += 1
        threshold = self._cut.get(group, math.inf)
        if math.isnan(score) or score < threshold:
            return False
        if score > threshold:
            return True
        if self._tied[group] < self._ties[group]:
            self._tied[group] += 1
            return True
        return False
