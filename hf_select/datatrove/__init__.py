"""hf-select scorers as datatrove pipeline steps: score a corpus on Local, Slurm or Ray executors, with resume.

Needs the optional extra ``pip install 'hf-select[datatrove]'``. Nothing else in hf-select imports this
package, so the core never depends on datatrove.

* :class:`AttentionInfluenceScorer` (arXiv 2505.07293) adds ``ai_loss_base``, ``ai_loss_ref``, ``ai_score``,
  ``ai_num_tokens`` and ``ai_too_short`` to ``Document.metadata``;
* :class:`ReferenceLossScorer` (RHO-1, arXiv 2404.07965) adds per-token ``ref_loss`` (and ``ref_entropy``) to
  packed training rows, in the row format :class:`~hf_select.trainer_ext.SLMTrainer` reads;
* :class:`PrefilterFlagger` (:func:`prefilter_steps`): exact dedup and datatrove's Gopher filters before the
  AttentionInfluence scorer, flagging dropped documents (null score, ``ai_filter_reason``) instead of losing them;
* :class:`ScoreCollector` + :class:`TopFractionFilter` keep the top fraction of each domain (two passes);
* :func:`attention_influence_pipeline` and :func:`make_executor` build reader -> scorer -> writer runs.
"""

from __future__ import annotations

try:
    import datatrove  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "hf_select.datatrove needs the datatrove package: pip install 'hf-select[datatrove]'"
    ) from error

from .pipelines import EXECUTORS, attention_influence_pipeline, make_executor, reference_loss_pipeline
from .selection import ScoreCollector, TopFractionFilter
from .steps import (
    AttentionInfluenceScorer,
    PrefilterFlagger,
    ReferenceLossScorer,
    packed_row_adapter,
    prefilter_steps,
    worker_device,
)

__all__ = [
    "EXECUTORS",
    "AttentionInfluenceScorer",
    "ReferenceLossScorer",
    "ScoreCollector",
    "TopFractionFilter",
    "attention_influence_pipeline",
    "make_executor",
    "packed_row_adapter",
    "prefilter_steps",
    "PrefilterFlagger",
    "reference_loss_pipeline",
    "worker_device",
]
