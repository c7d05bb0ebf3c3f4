"""RHO-1 Selective Language Modeling (Lin et al., 2024): reference losses, top-k% token selection by excess
loss, and token-loss dynamics. The trainer pair is :mod:`hf_select.trainer_ext.slm_trainer` / ``slm_config``.

* :mod:`.reference_losses` -- precomputed per-token reference losses;
* :mod:`.cross_tokenizer` -- reference losses from a model with another tokenizer;
* :mod:`.token_selection` -- the selection rule (per row or global);
* :mod:`.token_dynamics` -- the H->H / L->H / H->L / L->L analysis (Fig. 2).
"""

from .cross_tokenizer import CrossTokenizerProjection, cross_tokenizer_reference_losses, project_token_losses
from .reference_losses import compute_reference_losses, reference_token_stats
from .token_dynamics import classify_token_dynamics, token_loss_dynamics
from .token_selection import select_top_per_row, select_top_tokens

__all__ = [
    "CrossTokenizerProjection",
    "classify_token_dynamics",
    "compute_reference_losses",
    "cross_tokenizer_reference_losses",
    "project_token_losses",
    "reference_token_stats",
    "select_top_per_row",
    "select_top_tokens",
    "token_loss_dynamics",
]
