"""Training arguments of RHO-1 Selective Language Modeling (Lin et al., arXiv 2404.07965)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_select.training_args import HfSelectTrainingArguments

SELECT_SCOPES = ("sequence", "microbatch", "global")
SCORES = ("excess_loss", "reference_loss", "reference_entropy")
NEGATIVE_EXCESS_POLICIES = ("keep", "exclude")
SELF_REFERENCE_KEEP = ("low", "high")


@dataclass
class SLMConfig(HfSelectTrainingArguments):
    """[`TrainingArguments`] plus the token-selection options of [`SLMTrainer`] (RHO-1, arXiv 2404.07965).

    The loss is the mean cross-entropy over the selected tokens only; unselected tokens stay in the context.
    """

    token_select_ratio: float = field(
        default=0.6,
        metadata={
            "help": "Share of the trainable tokens kept in each selection scope, in (0, 1]. The paper uses "
            "0.6 (TinyLlama-1.1B) and 0.7 (Mistral-7B). A scope with n trainable tokens keeps ceil(ratio * n)."
        },
    )
    select_scope: str = field(
        default="global",
        metadata={
            "help": "Where the top tokens are ranked: 'sequence' (each row of a batch, a packed row may hold "
            "several documents), 'microbatch' (one device's forward batch) or 'global' (one threshold over all "
            "gradient-accumulation micro-batches of all processes, the paper's 'batch'). 'sequence' and "
            "'global' give the same update for any split of the global batch (with dropout > 0: up to the "
            "dropout masks, which differ between splits as in plain training); 'global' with the excess-loss "
            "score and gradient accumulation > 1 costs one extra no-grad forward of the student per step, in "
            "train mode with the random generators rewound, so it ranks exactly the losses that are trained."
        },
    )
    score: str = field(
        default="excess_loss",
        metadata={
            "help": "Token score: 'excess_loss' (student loss minus reference loss, higher is kept; the "
            "paper's SLM), or the self-reference variants 'reference_loss' / 'reference_entropy' (the "
            "reference model's loss / next-token entropy alone, see self_reference_keep)."
        },
    )
    self_reference_keep: str = field(
        default="low",
        metadata={
            "help": "For the self-reference scores: keep the tokens with the 'low' (default: tokens that the "
            "reference finds predictable; high-loss / high-entropy tokens count as noise) or 'high' values."
        },
    )
    negative_excess: str = field(
        default="keep",
        metadata={
            "help": "Selected tokens whose excess loss is negative (the student already beats the reference): "
            "'keep' trains them (the paper ranks raw excess losses) or 'exclude' gives them zero weight while "
            "the denominator stays the number of selected tokens (so the loss scale stays exact under "
            "gradient accumulation and data parallelism; the step shrinks when few tokens remain)."
        },
    )
    reference_chunk_size: int = field(
        default=2048,
        metadata={"help": "Tokens projected through the reference model's LM head at once (bounds memory)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.token_select_ratio <= 1.0:
            raise ValueError(f"token_select_ratio must be in (0, 1], got {self.token_select_ratio}")
        for name, allowed in (
            ("select_scope", SELECT_SCOPES),
            ("score", SCORES),
            ("negative_excess", NEGATIVE_EXCESS_POLICIES),
            ("self_reference_keep", SELF_REFERENCE_KEEP),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.reference_chunk_size < 1:
            raise ValueError(f"reference_chunk_size must be >= 1, got {self.reference_chunk_size}")
