"""Configuration of :class:`~hf_select.trainer_ext.OPUSTrainer` (OPUS, arXiv 2602.05400)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hf_select.training_args import HfSelectTrainingArguments

PRECONDITIONER_CHOICES = ("auto", "sgd", "adamw", "muon")
MUON_LINEARIZATION_CHOICES = ("newton_schulz", "polar", "one_step")
SKETCH_KIND_CHOICES = ("tensor", "factored", "countsketch")
GRAM_WEIGHT_CHOICES = ("numel", "sqrt_numel")
SELECTION_CHOICES = ("boltzmann", "greedy", "topk")


@dataclass
class OPUSConfig(HfSelectTrainingArguments):
    """``TrainingArguments`` plus the OPUS dynamic batch-selection options.

    Every step the trainer draws ``per_device_train_batch_size * buffer_factor`` candidate rows, scores them
    against a fresh proxy batch and trains on ``per_device_train_batch_size`` of them, so the update tokens
    per step equal those of a plain run with the same batch size. ``standardize=False`` with
    ``redundancy_weight=1`` is the paper's raw mode.
    """

    buffer_factor: float = field(
        default=2.0,
        metadata={
            "help": "Candidates scored per selected row (paper: 2, i.e. N = 2x the batch). Must be >= 1."
        },
    )
    select_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Fraction of the candidate buffer that is trained on, in (0, 1]; overrides buffer_factor "
            "(buffer = ceil(batch / select_ratio)). Default: 1 / buffer_factor (paper: 0.5)."
        },
    )
    temperature: float = field(
        default=0.9,
        metadata={
            "help": "Boltzmann temperature tau of p(z) ~ exp(U_z / tau) (paper: 0.9). In standard deviations of "
            "the utility when standardize is on."
        },
    )
    standardize: bool = field(
        default=True,
        metadata={
            "help": "Z-score the utilities over the buffer each step before the softmax and scale the redundancy "
            "term by the mean squared update norm. Off = the paper's raw utilities (~1e-3, near-uniform)."
        },
    )
    redundancy_weight: float = field(
        default=1.0,
        metadata={"help": "Weight lambda of the redundancy term <u_z, sum of picked u_j> (0 disables it)."},
    )
    sketch_dim: int | None = field(
        default=8192,
        metadata={
            "help": "CountSketch size per scored layer (paper: 8192). None = exact inner products. Layers with "
            "fewer parameters than this are always exact."
        },
    )
    sketch_kind: str = field(
        default="tensor",
        metadata={
            "help": "tensor (TensorSketch: error independent of the update's rank, FFT cost), factored (row x "
            "column grid: cheapest, but relative SD 0.17 vs 0.014 on rank-1 updates at 8192 dims), countsketch "
            "(plain, d_out x d_in tables, dense per-sample matrices). See hf_select/opus_sketch.py."
        },
    )
    gram_weight: str = field(
        default="numel",
        metadata={
            "help": "Layer weight of the Gram (redundancy) matrix: numel = 1/numel(W) as the official code "
            "(the Gram of updates scaled like the alignment), sqrt_numel = 1/sqrt(numel(W)). The alignment is "
            "always weighted 1/sqrt(numel(W))."
        },
    )
    exact_inner_product_elements: int = field(
        default=2**24,
        metadata={
            "help": "When the dense per-sample updates are formed anyway (AdamW's elementwise preconditioner, or "
            "a sketch that builds them), a layer with candidates x weights <= this many elements gets exact "
            "inner products instead of sketched ones (exact and cheaper). 0 = always sketch."
        },
    )
    sketch_in_backward: bool = field(
        default=True,
        metadata={
            "help": "Sketch each layer inside the scoring backward pass (hooks on the block Linear outputs), "
            "releasing its inputs at once; off = keep every layer's inputs and output gradients, then sketch."
        },
    )
    sketch_rank_one_adamw: bool = field(
        default=False,
        metadata={
            "help": "On sketched layers, replace AdamW's elementwise preconditioner by its rank-one (Adafactor) "
            "factorisation so the sketch comes straight from (gradient, input) factors: no dense per-sample "
            "matrix, approximate utilities. Off = exact elementwise preconditioning."
        },
    )
    score_window: int = field(
        default=512,
        metadata={
            "help": "Tokens per candidate (a random window of each row) used for scoring (paper: 512)."
        },
    )
    proxy_batch_size: int = field(
        default=8,
        metadata={
            "help": "Proxy rows drawn afresh each step for the target gradient (the official code: 16 as "
            "train.py's --opus_proxy_batch default, 8 in its run.sh)."
        },
    )
    preconditioner: str = field(
        default="auto",
        metadata={
            "help": "How the optimizer shapes the update: auto (from the optimizer class), sgd (identity), adamw "
            "(1/(sqrt(v_hat)+eps) with bias factors), muon (derivative of Muon's orthogonalised step at the "
            "frozen momentum, see muon_linearization)."
        },
    )
    muon_linearization: str = field(
        default="newton_schulz",
        metadata={
            "help": "Which map's derivative shapes the update under Muon: newton_schulz (the exact derivative of "
            "the Newton-Schulz iterations torch.optim.Muon runs, with its coefficients and steps), polar (the "
            "orthogonal polar factor that Newton-Schulz approximates; equal when it converges) or one_step "
            "(the official OPUS code's form: the first Newton-Schulz polynomial (aI + bA + cA^2) of the normalised "
            "momentum, frozen and applied to the gradient; not a derivative)."
        },
    )
    selection: str = field(
        default="boltzmann",
        metadata={
            "help": "boltzmann (paper: sequential draws p ~ exp(U/tau) with redundancy), greedy (argmax with "
            "redundancy) or topk (the k largest alignments, no redundancy: GhostSuite's GPT-2-small / Pile "
            "comparison, examples/opus/experiments/README.md in github.com/Jiachen-T-Wang/GhostSuite, reports "
            "val loss 2.830 for top-k vs 2.845 for Boltzmann at a calibrated temperature)."
        },
    )
    greedy: bool = field(
        default=False,
        metadata={"help": "Shorthand for selection='greedy' (deterministic argmax with redundancy)."},
    )
    opus_log_domains: bool = field(
        default=True,
        metadata={
            "help": "Log each domain's share of the selected rows (opus_share_<domain>) and of the candidates "
            "offered at the same steps (opus_offered_<domain>) at every logging step (needs a 'domain' column "
            "and remove_unused_columns=False)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.select_ratio is not None and not 0 < self.select_ratio <= 1:
            raise ValueError(f"select_ratio must be in (0, 1], got {self.select_ratio}")
        if self.buffer_factor < 1:
            raise ValueError(f"buffer_factor must be >= 1, got {self.buffer_factor}")
        if self.selection not in SELECTION_CHOICES:
            raise ValueError(f"selection must be one of {SELECTION_CHOICES}, got {self.selection!r}")
        if self.greedy:
            if self.selection not in ("boltzmann", "greedy"):
                raise ValueError(f"greedy=True conflicts with selection={self.selection!r}")
            self.selection = "greedy"
        if self.sketch_kind not in SKETCH_KIND_CHOICES:
            raise ValueError(f"sketch_kind must be one of {SKETCH_KIND_CHOICES}, got {self.sketch_kind!r}")
        if self.exact_inner_product_elements < 0:
            raise ValueError(
                f"exact_inner_product_elements must be >= 0, got {self.exact_inner_product_elements}"
            )
        if self.gram_weight not in GRAM_WEIGHT_CHOICES:
            raise ValueError(f"gram_weight must be one of {GRAM_WEIGHT_CHOICES}, got {self.gram_weight!r}")
        if self.selection == "boltzmann" and self.temperature <= 0:
            raise ValueError(
                f"temperature must be > 0 (or use selection='greedy' / 'topk'), got {self.temperature}"
            )
        if self.sketch_dim is not None and self.sketch_dim < 1:
            raise ValueError(f"sketch_dim must be >= 1 or None (exact), got {self.sketch_dim}")
        if self.score_window < 2:
            raise ValueError(f"score_window must be >= 2 tokens, got {self.score_window}")
        if self.proxy_batch_size < 1:
            raise ValueError(f"proxy_batch_size must be >= 1, got {self.proxy_batch_size}")
        if self.muon_linearization not in MUON_LINEARIZATION_CHOICES:
            raise ValueError(
                f"muon_linearization must be one of {MUON_LINEARIZATION_CHOICES}, got {self.muon_linearization!r}"
            )
        if self.preconditioner not in PRECONDITIONER_CHOICES:
            raise ValueError(
                f"preconditioner must be one of {PRECONDITIONER_CHOICES}, got {self.preconditioner!r}"
            )

    @property
    def candidates_per_device(self) -> int:
        """Size of the candidate buffer per device and micro-batch."""
        batch = self.per_device_train_batch_size
        if self.select_ratio is not None:
            return max(batch, math.ceil(batch / self.select_ratio - 1e-9))
        return max(batch, round(batch * self.buffer_factor))
