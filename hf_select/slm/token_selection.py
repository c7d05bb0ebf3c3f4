"""Token selection of RHO-1 Selective Language Modeling (Lin et al., arXiv 2404.07965), on plain tensors.

Conventions: ``scores``, ``valid`` and per-token losses are ``[batch, seq]`` tensors aligned like
:mod:`hf_select.token_loss` (position ``t`` = predicting token ``t``); higher scores are kept. A ``NaN`` score
(a token without a reference value) counts as not valid: never selected, not counted in ``n``. A scope with ``n``
trainable tokens keeps ``ceil(ratio * n)`` of them (at least one when ``n > 0``), exactly that many in every
scope. Ties are broken by position (earlier first): in the "sequence" and "microbatch" scopes within the row /
micro-batch; in the "global" scope everything above the k-th largest score is kept and the tokens *at* it are
taken in order (process rank, micro-batch, row, position) until ``k`` are kept. Without the tie rule a
student equal to its reference (a LoRA reference at step 0: every excess loss is 0) would select every token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_EPS = 1e-6  # 0.6 * 5 is 3.0000000000000004 in floating point; ceil must still give 3


def check_ratio(ratio: float) -> None:
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"token_select_ratio must be in (0, 1], got {ratio}")


def selected_count(num_valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """``ceil(ratio * n)`` (at least 1 when ``n > 0``) for every entry of ``num_valid`` (int64)."""
    check_ratio(ratio)
    n = num_valid.long()
    k = torch.ceil(n.double() * ratio - _EPS).long().clamp(min=1)
    return torch.where(n > 0, torch.minimum(k, n), torch.zeros_like(n))


def select_top_per_row(scores: torch.Tensor, valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep the ``ceil(ratio * n_row)`` highest-scoring valid tokens of every row (``[batch, seq]`` bool)."""
    valid = valid & ~torch.isnan(scores.detach())
    k = selected_count(valid.sum(-1), ratio)
    ranked = scores.detach().float().masked_fill(~valid, float("-inf"))
    order = ranked.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return (ranks < k[:, None]) & valid


def select_top_tokens(scores: torch.Tensor, valid: torch.Tensor, ratio: float, scope: str) -> torch.Tensor:
    """Selection mask for the "sequence" (per row) or "microbatch" (whole tensor) scope."""
    if scope == "sequence":
        return select_top_per_row(scores, valid, ratio)
    if scope == "microbatch":
        flat = select_top_per_row(scores.reshape(1, -1), valid.reshape(1, -1), ratio)
        return flat.reshape(valid.shape)
    raise ValueError(f"scope must be 'sequence' or 'microbatch' here, got {scope!r}")


def global_cutoff(valid_scores: torch.Tensor, ratio: float) -> tuple[torch.Tensor, int]:
    """The global scope's cut: the k-th largest score ``t`` (``k = ceil(ratio * n)``) of a flat tensor of all
    valid scores, and how many of the tokens scoring exactly ``t`` to keep (``k - #(score > t)``) so that
    exactly ``k`` are selected. ``(+inf, 0)`` when empty."""
    n = valid_scores.numel()
    if n == 0:
        return torch.tensor(float("inf"), device=valid_scores.device), 0
    scores = valid_scores.float()
    k = int(selected_count(torch.tensor(n), ratio))
    threshold = torch.kthvalue(scores.cpu(), n - k + 1).values.to(scores.device)
    return threshold, k - int((scores > threshold).sum())


def select_by_cutoff(
    scores: Sequence[torch.Tensor],
    valid: Sequence[torch.Tensor],
    threshold: torch.Tensor,
    ties_to_keep: int,
) -> list[torch.Tensor]:
    """Selection masks of several ``[batch, seq]`` tensors (one per micro-batch) for a global cut: every valid
    token above ``threshold`` and the first ``ties_to_keep`` valid tokens *at* it, in order (micro-batch, row,
    position)."""
    out = []
    for score, mask in zip(scores, valid):
        score = score.detach().float()
        mask = mask & ~torch.isnan(score)
        ties = mask & (score == threshold)
        rank = ties.reshape(-1).long().cumsum(0).reshape(ties.shape)  # 1-based order of the ties
        keep = ties & (rank <= ties_to_keep)
        ties_to_keep = max(ties_to_keep - int(ties.sum()), 0)
        out.append((mask & (score > threshold)) | keep)
    return out


def selection_count(valid: torch.Tensor, ratio: float, scope: str) -> torch.Tensor:
    """Number of tokens the "sequence" / "microbatch" scope will select, known before any forward pass."""
    if scope == "sequence":
        return selected_count(valid.sum(-1), ratio).sum()
    if scope == "microbatch":
        return selected_count(valid.sum(), ratio)
    raise ValueError(f"the count of scope {scope!r} depends on the scores")


def selective_loss_sum(
    token_losses: torch.Tensor, selected: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum of the losses of the selected tokens (optionally weighted); divide by the selected count."""
    keep = selected.to(token_losses.dtype)
    if weights is not None:
        keep = keep * weights.to(token_losses.dtype)
    return (token_losses * keep).sum()
