"""What every stage of the main job (``hf-select demo``) sees: paths, mode and earlier stages' results.

Layout (the contract between stages):

- ``cache_dir/world[-quick]/`` -- the demo world, built once and reused:
  ``pretrain/`` (``DatasetDict`` saved with ``save_to_disk``: splits ``train`` and ``heldout``; columns
  ``text, domain, source, url, title, license``), ``lowq/`` (``Dataset``, same schema, low-quality pool),
  ``finetune/`` (``DatasetDict`` ``train`` / ``heldout``: ``question, answer, tier, source``),
  ``eval_tasks/`` (task YAML + JSONL files in the harness format, ``eval/TASK_FORMAT.md``),
  ``manifest.json``.
- ``cache_dir/world[-quick]/tokenizer/`` and ``cache_dir/world[-quick]/base_model/``: HF folders.
- ``output_dir/stages/<stage>/``: a stage's artifacts; ``output_dir/stages/<stage>.json``: its result
  (the completion marker: a re-run reuses it).
- ``output_dir/students/<name>/``: trained student models (HF folders) that the evaluation stage picks up.
- ``output_dir/report.html``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StudentSettings:
    """Shared budget of the small students (baseline, SLM, MeCo, OPUS) so that they compare fairly.

    The full default (80 steps x 16 rows x 256 tokens = 0.33M tokens, ~1.5 min per plain student on 2 idle cores)
    is sized so that the four students fit the 30-minute first run of ``make demo``; raise ``max_steps`` for a
    sharper comparison.
    """

    seq_length: int = 256
    batch_size: int = 16
    max_steps: int = 80
    learning_rate: float = 2e-3
    warmup_ratio: float = 0.05
    seed: int = 0


@dataclass
class DemoContext:
    output_dir: Path
    cache_dir: Path
    quick: bool = False
    seed: int = 0
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        self.cache_dir = Path(self.cache_dir)

    @property
    def world_dir(self) -> Path:
        return self.cache_dir / ("world-quick" if self.quick else "world")

    @property
    def tokenizer_dir(self) -> Path:
        return self.world_dir / "tokenizer"

    @property
    def base_model_dir(self) -> Path:
        return self.world_dir / "base_model"

    @property
    def students_dir(self) -> Path:
        return self.output_dir / "students"

    @property
    def student_settings(self) -> StudentSettings:
        if self.quick:
            return StudentSettings(seq_length=128, batch_size=8, max_steps=12, seed=self.seed)
        return StudentSettings(seed=self.seed)

    def stage_dir(self, name: str) -> Path:
        path = self.output_dir / "stages" / name
        path.mkdir(parents=True, exist_ok=True)
        return path
