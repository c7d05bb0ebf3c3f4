"""Configuration of MeCo: metadata conditioning then cooldown (Gao et al. 2025, arXiv 2501.01956)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_select.meco.metadata import DEFAULT_TEMPLATE, METADATA_MODES, format_metadata
from hf_select.training_args import HfSelectTrainingArguments


@dataclass
class MeCoConfig(HfSelectTrainingArguments):
    """``TrainingArguments`` of :class:`MeCoTrainer`.

    The optimiser defaults follow the paper (AdamW betas (0.9, 0.95), learning rate 3e-3, weight decay 0.033,
    5% warm-up, cosine decay to 10% of the peak); ``max_steps`` must be set because the switch from
    conditioned to plain documents happens at step ``max_steps - round(cooldown_fraction * max_steps)``.
    """

    cooldown_fraction: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of max_steps at the end of the run that train on plain documents without metadata "
            "(the cooldown), in [0, 1). 0 trains with metadata throughout (the paper's metadata-only ablation)."
        },
    )
    cooldown_pool_fraction: float | None = field(
        default=None,
        metadata={
            "help": "When no separate cooldown dataset is given: fraction of the documents held out as the "
            "disjoint cooldown pool (default: cooldown_fraction)."
        },
    )
    metadata_column: str = field(
        default="url", metadata={"help": "Dataset column holding each document's metadata (e.g. its URL)."}
    )
    metadata_mode: str = field(
        default="host",
        metadata={
            "help": "How the metadata value is shown: host (official MeCo URL rule), domain (registered domain), "
            "suffix (public suffix), hash (fixed random string per host), full (URL as is), raw (any "
            "other metadata, e.g. a topic, as is).",
            "choices": list(METADATA_MODES),
        },
    )
    metadata_name: str = field(
        default="URL", metadata={"help": "Name shown before the value, e.g. URL or Topic."}
    )
    metadata_template: str = field(
        default=DEFAULT_TEMPLATE,
        metadata={
            "help": "Format of the metadata prefix with {name} and {value} (default 'URL: <value>\\n\\n')."
        },
    )
    invalid_metadata: str = field(
        default="raise",
        metadata={
            "help": "A document whose metadata is empty or unusable (e.g. an empty URL): raise (default: an "
            "error naming the row), skip (drop it; counted and logged) or plain (keep it without metadata).",
            "choices": ["raise", "skip", "plain"],
        },
    )
    text_column: str = field(default="text", metadata={"help": "Dataset column holding the document text."})
    max_length: int = field(default=2048, metadata={"help": "Tokens per packed row (the paper uses 8192)."})
    packing_overflow: str = field(
        default="discard",
        metadata={
            "help": "What happens to the part of a document that does not fit in its row: discard (MeCo's rule) "
            "or carry (starts the next row).",
            "choices": ["discard", "carry"],
        },
    )
    # Paper defaults (MeCo, Gao et al. 2025, section 3; docs/meco.md) instead of TrainingArguments'.
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate (paper: 3e-3)."})
    weight_decay: float = field(default=0.033, metadata={"help": "AdamW weight decay (paper: 0.033)."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (paper: 0.95)."})
    warmup_steps: float = field(
        default=0.05,
        metadata={"help": "Warm-up steps; a value below 1 is a ratio of max_steps (paper: 0.05)."},
    )
    lr_scheduler_type: str = field(
        default="cosine_with_min_lr",
        metadata={
            "help": "Learning-rate schedule (paper: cosine down to a tenth of the peak, min_lr_rate 0.1 by default)."
        },
    )

    def __post_init__(self):
        if not 0.0 <= self.cooldown_fraction < 1.0:
            raise ValueError(f"cooldown_fraction must be in [0, 1), got {self.cooldown_fraction}")
        pool = self.cooldown_pool_fraction
        if pool is not None and not 0.0 < pool < 1.0:
            raise ValueError(f"cooldown_pool_fraction must be in (0, 1), got {pool}")
        if self.metadata_mode not in METADATA_MODES:
            raise ValueError(f"metadata_mode must be one of {METADATA_MODES}, got {self.metadata_mode!r}")
        if self.invalid_metadata not in ("raise", "skip", "plain"):
            raise ValueError(
                f"invalid_metadata must be 'raise', 'skip' or 'plain', got {self.invalid_metadata!r}"
            )
        if not self.metadata_column:
            raise ValueError("metadata_column must name the dataset column that holds the metadata")
        format_metadata("x", self.metadata_name, self.metadata_template)  # validates the template
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.packing_overflow not in ("discard", "carry"):
            raise ValueError(f"packing_overflow must be 'discard' or 'carry', got {self.packing_overflow!r}")
        if self.ignore_data_skip:
            raise ValueError(
                "MeCo aligns its data with the step count; ignore_data_skip=True would replay the conditioning "
                "phase after a resume"
            )
        if self.auto_find_batch_size:
            raise ValueError(
                "MeCo lays out its data by global batch size; auto_find_batch_size would change it mid-run"
            )
        if str(self.lr_scheduler_type) == "cosine_with_min_lr" and not self.lr_scheduler_kwargs:
            self.lr_scheduler_kwargs = {"min_lr_rate": 0.1}
        super().__post_init__()

    def conditioned_steps(self) -> int:
        """Number of optimizer steps that see conditioned documents (the cooldown starts after them)."""
        if self.max_steps <= 0:
            raise ValueError("MeCo needs max_steps > 0: the switch to the cooldown is placed by step count")
        return self.max_steps - int(self.cooldown_fraction * self.max_steps + 0.5)
