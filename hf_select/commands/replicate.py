"""``hf-select replicate FILE.yaml``: one paper's direction replicated in its own setting, scaled down; renders
``docs/results.md`` from every finished replication (``make replicate`` runs them all; docs/results.md)."""

from __future__ import annotations

from ..replicate.config import ReplicationConfig

CONFIG_CLASSES = (ReplicationConfig,)


def run(config: ReplicationConfig) -> int:
    from ..replicate import render_results, run_replication
    from ..replicate.runner import main_command

    record = run_replication(config, command=main_command() or None)
    page = render_results(config.output_dir, config.results, config.notes_dir)
    print(f"{config.method}: {record['wall_seconds'] / 60:.1f} min; results: {page}")
    return 0
