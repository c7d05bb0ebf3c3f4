"""Token-loss dynamics across checkpoints (RHO-1, Lin et al., arXiv 2404.07965, section 2.1).

For every trainable token of a fixed set of rows, its loss at ``n`` checkpoints is fit with a least-squares line
over the checkpoint index ``0 .. n-1``; ``delta = slope * n`` (the paper's rule, read literally: the slope
times the number of checkpoints). A second reading, the fitted end minus the fitted start (``slope * (n - 1)``),
moves a few percent of the tokens across the threshold; it is available as ``span="n-1"``. ``delta < -threshold`` ->
``H->L`` (learned), ``delta > threshold`` -> ``L->H`` (forgotten / getting harder); otherwise the token's loss at
the last checkpoint is compared with the mean loss of all tokens at the last checkpoint: ``<= mean`` -> ``L->L``
(already easy), else ``H->H`` (persistently hard, often noise). The paper reports, for a 1B model, H->H 11%,
L->H 12%, H->L 26%, L->L 51%.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..packing import PackedCollator
from ..token_loss import per_token_loss

CLASSES = ("H->H", "L->H", "H->L", "L->L")
SPANS = ("n", "n-1")


def loss_deltas(losses: np.ndarray, span: str = "n") -> np.ndarray:
    """``delta`` of every column of ``losses [n_checkpoints, n_tokens]`` from its least-squares line.

    Args:
        losses: per-checkpoint losses of every token.
        span: ``"n"`` (default, the paper: ``delta = slope * n``) or ``"n-1"`` (fitted end minus fitted start,
            ``slope * (n - 1)``).
    """
    if span not in SPANS:
        raise ValueError(f"span must be one of {SPANS}, got {span!r}")
    losses = np.asarray(losses, dtype=np.float64)
    n = losses.shape[0]
    if n < 2:
        raise ValueError(f"token-loss dynamics need at least 2 checkpoints, got {n}")
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2
    slope = (x[:, None] * (losses - losses.mean(0))).sum(0) / (x**2).sum()
    return slope * (n if span == "n" else n - 1)


def classify_token_dynamics(losses: np.ndarray, threshold: float = 0.2, span: str = "n") -> np.ndarray:
    """Class index into :data:`CLASSES` for every token (column) of ``losses [n_checkpoints, n_tokens]``;
    ``span`` as in :func:`loss_deltas`."""
    losses = np.asarray(losses, dtype=np.float64)
    delta = loss_deltas(losses, span)
    last = losses[-1]
    classes = np.where(last <= last.mean(), CLASSES.index("L->L"), CLASSES.index("H->H"))
    classes = np.where(delta > threshold, CLASSES.index("L->H"), classes)
    return np.where(delta < -threshold, CLASSES.index("H->L"), classes)


def dynamics_shares(classes: np.ndarray) -> dict[str, float]:
    """Share of tokens in every class."""
    classes = np.asarray(classes)
    total = max(classes.size, 1)
    return {name: float((classes == i).sum() / total) for i, name in enumerate(CLASSES)}


def checkpoint_token_losses(model, dataset, batch_size: int = 8, pad_token_id: int = 0) -> np.ndarray:
    """Losses of all trainable tokens of ``dataset`` rows (``input_ids``, optional ``labels``/``position_ids``),
    flattened in row order."""
    device = next(model.parameters()).device
    collate = PackedCollator(pad_token_id=pad_token_id, use_cache=None)
    out = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        features = []
        for i, ids in enumerate(rows["input_ids"]):
            features.append(
                {
                    "input_ids": ids,
                    "labels": rows["labels"][i] if "labels" in rows else ids,
                    "position_ids": rows["position_ids"][i]
                    if "position_ids" in rows
                    else list(range(len(ids))),
                }
            )
        batch = {k: v.to(device) for k, v in collate(features).items()}
        losses, mask = per_token_loss(model, batch["input_ids"], None, batch["position_ids"], batch["labels"])
        out.append(losses[mask].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def token_loss_dynamics(
    checkpoints: Sequence,
    dataset,
    batch_size: int = 8,
    pad_token_id: int = 0,
    threshold: float = 0.2,
    device: str | None = None,
    span: str = "n",
) -> dict:
    """Classify the loss dynamics of every trainable token of ``dataset`` over ``checkpoints``.

    Args:
        checkpoints: models or paths of checkpoints (in training order), loaded one at a time.
        dataset: rows with ``input_ids`` (packed rows: also ``labels`` and ``position_ids``).
        batch_size: rows per forward pass.
        pad_token_id: padding id inside a batch.
        threshold: ``|delta|`` above which a token counts as changing (paper: 0.2).
        device: where to run the checkpoints loaded from paths (default: CUDA if available).
        span: how ``delta`` reads the fitted line: ``"n"`` (paper, ``slope * n``) or ``"n-1"``.

    Returns:
        ``losses`` ``[n_checkpoints, n_tokens]``, ``delta``, ``classes`` (indices into :data:`CLASSES`),
        ``shares`` (class -> share) and ``mean_loss`` (class -> mean loss per checkpoint).
    """
    from ..loading import load_causal_lm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    largest_id = max((max(ids, default=0) for ids in dataset["input_ids"]), default=0)
    for checkpoint in tqdm(checkpoints, desc="checkpoints"):
        model = (
            load_causal_lm(str(checkpoint), device=device)
            if isinstance(checkpoint, (str, Path))
            else checkpoint
        )
        embedding_rows = model.get_input_embeddings().num_embeddings
        if largest_id >= embedding_rows:
            raise InputError(
                f"token id {largest_id} of the rows is past the embedding of checkpoint {checkpoint} "
                f"({embedding_rows} rows): the tokenizer does not belong to this model"
            )
        rows.append(checkpoint_token_losses(model, dataset, batch_size, pad_token_id))
    losses = np.stack(rows)
    classes = classify_token_dynamics(losses, threshold, span)
    mean_loss = {
        name: losses[:, classes == i].mean(1).tolist() if (classes == i).any() else []
        for i, name in enumerate(CLASSES)
    }
    return {
        "losses": losses,
        "delta": loss_deltas(losses, span),
        "classes": classes,
        "shares": dynamics_shares(classes),
        "mean_loss": mean_loss,
    }


def shares_table(shares: dict[str, float], paper: bool = True) -> str:
    """Markdown table of the class shares (with the paper's 1B shares for comparison)."""
    reference = {"H->H": 0.11, "L->H": 0.12, "H->L": 0.26, "L->L": 0.51}
    lines = [
        "| class | share |" + (" paper (1B) |" if paper else ""),
        "|---|---|" + ("---|" if paper else ""),
    ]
    for name in CLASSES:
        lines.append(f"| {name} | {shares[name]:.1%} |" + (f" {reference[name]:.0%} |" if paper else ""))
    return "\n".join(lines)


def plot_token_dynamics(
    result: dict, path: str | Path, checkpoint_labels: Sequence[str] | None = None
) -> Path:
    """Mean loss per class over the checkpoints (left) and the class shares (right), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    n = result["losses"].shape[0]
    labels = list(checkpoint_labels) if checkpoint_labels else [str(i) for i in range(n)]
    for name, curve in result["mean_loss"].items():
        if curve:
            left.plot(labels, curve, marker="o", label=f"{name} ({result['shares'][name]:.0%})")
    left.set_xlabel("checkpoint")
    left.set_ylabel("mean token loss")
    left.legend()
    right.bar(list(result["shares"]), [100 * v for v in result["shares"].values()], color="tab:blue")
    right.set_ylabel("% of tokens")
    fig.suptitle("Token-loss dynamics (RHO-1, section 2.1)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
