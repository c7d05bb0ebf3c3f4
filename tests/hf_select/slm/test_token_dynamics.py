import numpy as np
import pytest
import torch
from datasets import Dataset
from figure_checks import is_drawn

from hf_select.slm.token_dynamics import (
    CLASSES,
    classify_token_dynamics,
    loss_deltas,
    plot_token_dynamics,
    shares_table,
    token_loss_dynamics,
)
from hf_select.testing import tiny_model


def test_delta_is_slope_times_n():
    losses = np.array([[1.0], [1.5], [2.0], [2.5]])  # slope 0.5 per checkpoint, n = 4
    assert loss_deltas(losses)[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="2 checkpoints"):
        loss_deltas(np.ones((1, 3)))


def test_classifier_matches_hand_made_trajectories():
    trajectories = {
        "H->L": [5.0, 3.0, 1.0],  # falls a lot
        "L->H": [1.0, 2.0, 3.0],  # rises
        "H->H": [6.0, 6.05, 5.95],  # flat, ends above the mean
        "L->L": [0.5, 0.45, 0.55],  # flat, ends below the mean
        "L->L (flat)": [2.0, 2.0, 2.0],  # flat, ends below the last-checkpoint mean (2.5)
    }
    losses = np.array(list(trajectories.values())).T
    got = [CLASSES[c] for c in classify_token_dynamics(losses)]
    assert got == ["H->L", "L->H", "H->H", "L->L", "L->L"]
    # |delta| <= 0.2 stays flat: slope 0.03 over 3 checkpoints -> delta 0.09
    assert CLASSES[classify_token_dynamics(np.array([[1.0, 9.0], [1.03, 9.0], [1.06, 9.0]]))[0]] == "L->L"


def test_token_loss_dynamics_end_to_end(tmp_path):
    rows = Dataset.from_dict({"input_ids": [[5, 6, 7, 8, 9, 10], [11, 12, 13]]})
    models = [tiny_model("llama", seed=s) for s in (0, 1, 2)]
    result = token_loss_dynamics(models, rows, batch_size=1)
    assert result["losses"].shape == (3, 5 + 2)
    assert sum(result["shares"].values()) == pytest.approx(1.0)
    with torch.no_grad():
        first = torch.nn.functional.cross_entropy(models[0](torch.tensor([[5]])).logits[0], torch.tensor([6]))
    assert result["losses"][0, 0] == pytest.approx(float(first))
    assert "| H->H |" in shares_table(result["shares"])
    assert is_drawn(plot_token_dynamics(result, tmp_path / "dyn.png"))
