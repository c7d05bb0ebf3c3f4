"""``hf_select.replicate``: each paper's direction replicated in its own setting, scaled down
(``hf-select replicate``, ``make replicate``, ``docs/results.md``).

One replication is a YAML file (:class:`ReplicationConfig`) and one registered function
(:func:`register_replication`) that builds the method's inputs once (:meth:`ReplicationContext.step`), runs
``compare`` studies and returns its :class:`Section` of the results page. The method modules of this package
register themselves; the core never imports them.
"""

from .config import REPLICATIONS, ReplicationConfig, register_replication, replication_types
from .context import ReplicationContext, Row, Section
from .runner import render_results, run_replication

__all__ = [
    "REPLICATIONS", "ReplicationConfig", "ReplicationContext", "Row", "Section", "register_replication",
    "render_results", "replication_types", "run_replication",
]  # fmt: skip
