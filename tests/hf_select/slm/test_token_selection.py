import pytest
import torch

from hf_select.slm.token_selection import (
    global_cutoff,
    select_top_tokens,
    selected_count,
    selection_count,
    selective_loss,
)


def test_selected_count_is_ceil_of_ratio_times_n():
    n = torch.tensor([0, 1, 5, 10, 3])
    assert selected_count(n, 0.6).tolist() == [0, 1, 3, 6, 2]
    assert selected_count(n, 1.0).tolist() == [0, 1, 5, 10, 3]
    assert selected_count(torch.tensor([100]), 0.01).tolist() == [1]
    for bad in (0.0, 1.01, -1.0):
        with pytest.raises(ValueError, match="token_select_ratio"):
            selected_count(n, bad)


def test_selective_loss_matches_hand_computation():
    losses = torch.tensor([[0.0, 2.0, 1.0, 4.0, 3.0], [0.0, 1.0, 5.0, 0.5, 2.5]])
    ref = torch.tensor([[0.0, 1.0, 1.5, 1.0, 0.0], [0.0, 0.0, 4.0, 0.0, 3.0]])
    valid = torch.tensor([[False, True, True, True, True], [False, True, True, True, False]])
    excess = losses - ref  # row 0: 1, -0.5, 3, 3 ; row 1: 1, 1, 0.5 (last one invalid)
    # sequence: row 0 keeps ceil(2.4)=3 -> positions 3, 4, 1 ; row 1 keeps ceil(1.8)=2 -> positions 1, 2 (tie 1.0)
    expected = (4.0 + 3.0 + 2.0 + 1.0 + 5.0) / 5
    assert float(selective_loss(losses, valid, excess, 0.6, "sequence")) == pytest.approx(expected)
    # microbatch / global: 7 valid -> keep ceil(4.2)=5: excess 3, 3, 1, 1, 1 -> losses 4, 3, 2, 1, 5
    for scope in ("microbatch", "global"):
        assert float(selective_loss(losses, valid, excess, 0.6, scope)) == pytest.approx(expected)
    # ratio 0.3 over the micro-batch: ceil(2.1)=3 -> excess 3, 3 and the first 1.0 in position order (row 0, t 1)
    sel = select_top_tokens(excess, valid, 0.3, "microbatch")
    assert sel.nonzero().tolist() == [[0, 1], [0, 3], [0, 4]]
    assert int(selection_count(valid, 0.3, "microbatch")) == 3
    assert int(selection_count(valid, 0.3, "sequence")) == 2 + 1


def test_invalid_positions_are_never_selected_and_ratio_one_is_plain_mean():
    torch.manual_seed(0)
    losses, scores = torch.rand(3, 7), torch.rand(3, 7) * 100
    valid = torch.rand(3, 7) > 0.4
    for scope in ("sequence", "microbatch"):
        assert not (select_top_tokens(scores, valid, 0.9, scope) & ~valid).any()
        plain = losses[valid].mean()
        torch.testing.assert_close(selective_loss(losses, valid, scores, 1.0, scope), plain)
    assert float(global_cutoff(torch.tensor([5.0, 1.0, 3.0, 2.0]), 0.5)[0]) == 3.0
