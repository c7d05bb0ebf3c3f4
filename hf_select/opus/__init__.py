"""OPUS: dynamic in-training batch selection by optimizer-shaped gradient utility against a proxy set. The
trainer pair is :mod:`hf_select.trainer_ext.opus_trainer` / ``opus_config``.

* :mod:`.alignment` -- per-sample gradients, preconditioners, utilities and sampling;
* :mod:`.sketch` -- the factored CountSketch;
* :mod:`.proxy_pool` -- building the proxy set.
"""

from .alignment import select_candidates
from .proxy_pool import benchmark_proxy_texts, build_proxy_pool
from .sketch import FactoredCountSketch

__all__ = ["FactoredCountSketch", "benchmark_proxy_texts", "build_proxy_pool", "select_candidates"]
