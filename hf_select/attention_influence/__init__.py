"""AttentionInfluence (Hua et al., 2025): detect retrieval heads, mask them, score documents by the relative
loss increase.

* :mod:`.retrieval_heads` -- retrieval-head detection on the synthetic key/value proxy (:mod:`.proxy_task`);
* :mod:`.head_masking` -- causal-uniform head masking;
* :mod:`.prefilter` -- exact dedup and datatrove's Gopher filters before scoring (``prefilter``);
* :mod:`.scorer` -- the ``Dataset.map`` scorer;
* :mod:`.proxy_accuracy` -- the App. D masking check.
"""

from .head_masking import HeadMasker, mask_heads, normalize_heads
from .prefilter import PREFILTERS, filter_reasons, prefilter_dataset
from .proxy_accuracy import masking_check, proxy_task_accuracy
from .proxy_task import build_proxy_samples, proxy_dataset
from .retrieval_heads import RetrievalHeads, detect_retrieval_heads, record_attention_argmax
from .scorer import (
    SCORE_COLUMNS,
    AttentionInfluence,
    AttentionInfluenceConfig,
    base_and_reference_losses,
    score_dataset,
)

__all__ = [
    "SCORE_COLUMNS",
    "AttentionInfluence",
    "AttentionInfluenceConfig",
    "HeadMasker",
    "PREFILTERS",
    "RetrievalHeads",
    "base_and_reference_losses",
    "build_proxy_samples",
    "detect_retrieval_heads",
    "filter_reasons",
    "mask_heads",
    "masking_check",
    "normalize_heads",
    "prefilter_dataset",
    "proxy_dataset",
    "proxy_task_accuracy",
    "record_attention_argmax",
    "score_dataset",
]
