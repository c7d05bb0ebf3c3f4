"""The Data Whisperer replication's pieces (hf_select.replicate.data_whisperer) against hand values and
invariants: arm subsets, the invalid-group share, intervals, paired rows and the section's assembly."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from datasets import Dataset

from hf_select.compare.stats import t_quantile
from hf_select.replicate.data_whisperer import (
    ARMS,
    DataWhispererReplicationOptions,
    _arm_seeds,
    _section,
    arm_subsets,
    deciding_budget,
    invalid_share,
    mean_interval,
    paired_row,
)

SCORES = [0.5, math.nan, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]


def test_arm_subsets_hand_values():
    subsets = arm_subsets(SCORES, 0.2, [0, 1, 2])
    for s in (0, 1, 2):
        assert subsets["top"][s].tolist() == [3, 7]  # 0.9 and 0.8
        assert subsets["bottom"][s].tolist() == [2, 6]  # 0.1 and 0.2: the NaN (index 1) is never selected
        assert subsets["full"][s].tolist() == list(range(10))
        assert len(subsets["random"][s]) == 2 and len(set(subsets["random"][s].tolist())) == 2
    # random draws: one per seed, repeatable
    assert subsets["random"][0].tolist() == arm_subsets(SCORES, 0.2, [0])["random"][0].tolist()
    draws = {tuple(subsets["random"][s].tolist()) for s in (0, 1, 2)}
    assert len(draws) > 1


def test_arm_subsets_top_and_bottom_disjoint_and_swap_under_negation():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=300)
    subsets = arm_subsets(scores, 0.1, [0])
    assert len(subsets["top"][0]) == len(subsets["bottom"][0]) == len(subsets["random"][0]) == 30
    assert not set(subsets["top"][0].tolist()) & set(subsets["bottom"][0].tolist())
    assert scores[subsets["top"][0]].min() > scores[subsets["bottom"][0]].max()
    negated = arm_subsets(-scores, 0.1, [0])
    assert negated["top"][0].tolist() == subsets["bottom"][0].tolist()


def test_invalid_share():
    assert invalid_share({"groups": 8, "invalid_groups": 2}) == 0.25
    assert invalid_share({"groups": 5, "invalid_groups": 0}) == 0.0
    assert math.isnan(invalid_share({"groups": 0, "invalid_groups": 0}))


def test_mean_interval_hand_value():
    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) x sd 1 / sqrt(3)
    assert mean == 2.0 and low == pytest.approx(2 - half, rel=1e-9) and high == pytest.approx(2 + half, rel=1e-9)
    assert mean_interval([4.0]) == (4.0, None, None)


def _runs(values):
    return {s: {"gold_loss": v, "metric": -v} for s, v in enumerate(values)}


def test_paired_row_verdicts_and_antisymmetry():
    top, other = _runs([1.00, 1.10, 0.90, 1.05]), _runs([1.10, 1.21, 0.99, 1.16])
    row, cmp = paired_row("loss", "top vs other", "top < other", top, other, "gold_loss", True, [0, 1, 2, 3])
    assert row.verdict == "better" and cmp["ci"][1] < 0
    assert cmp["difference"] == pytest.approx(np.mean([-0.10, -0.11, -0.09, -0.11]))
    row_m, _ = paired_row("metric", "top vs other", "top > other", top, other, "metric", False, [0, 1, 2, 3])
    assert row_m.verdict == "better"
    swapped, cmp_swapped = paired_row("loss", "other vs top", "", other, top, "gold_loss", True, [0, 1, 2, 3])
    assert swapped.verdict == "worse" and cmp_swapped["difference"] == pytest.approx(-cmp["difference"])
    noisy, _ = paired_row("loss", "x", "", _runs([1.0, 1.2, 0.8]), _runs([1.1, 1.0, 1.0]), "gold_loss", True,
                          [0, 1, 2])  # fmt: skip
    assert noisy.verdict == "undetermined" and float(noisy.detectable) > 0


def test_deciding_budget_matches_stats():
    from hf_select.compare.stats import seeds_needed

    cmp = {"difference": 0.01, "sd": 0.02}
    text = deciding_budget(cmp, 60.0)
    assert f"about {seeds_needed(0.02, 0.01)} paired seeds" in text
    assert "no observed difference" in deciding_budget({"difference": 0.0, "sd": 0.1}, 60.0)


def test_options_checks():
    with pytest.raises(ValueError, match="full_seeds"):
        DataWhispererReplicationOptions(seeds=[0, 1], full_seeds=[5])
    with pytest.raises(ValueError, match="among random_seeds"):
        DataWhispererReplicationOptions(seeds=[0, 7], random_seeds=[0, 1, 2])
    with pytest.raises(ValueError, match="fraction"):
        DataWhispererReplicationOptions(fraction=1.5)
    config = DataWhispererReplicationOptions().whisperer_config()
    assert (config.n_demos, config.n_queries, config.query_mode) == (5, 3, "joint")


def test_section_assembly_str_and_rows():
    """The section from fake runs: STR = selection seconds / mean full fine-tuning seconds, every arm and seed
    reported, the paired rows computed on the right seeds."""
    options = DataWhispererReplicationOptions(per_tier=4, heldout_per_tier=2, seeds=[0, 1, 2], full_seeds=[0, 1],
                                              random_seeds=[0, 1, 2, 3])  # fmt: skip
    pool = Dataset.from_dict({"tier": ["high"] * 4 + ["medium"] * 4 + ["low"] * 4})
    held = Dataset.from_dict({"tier": ["high", "low"]})
    scores = list(np.linspace(1, 0, 12))
    scoring = {"scores": scores, "selection_seconds": 30.0, "attn_layer": 12, "tier_auroc": 0.9,
               "stats": {"groups": 4, "invalid_groups": 1, "retries": 2, "prompt_tokens": 100, "generated_tokens": 10}}  # fmt: skip
    subsets = arm_subsets(scores, 0.25, options.random_seeds)
    base = {"gold_loss": 3.0, "metric": 0.1}
    loss = {"top": 2.0, "random": 2.2, "bottom": 2.5, "full": 2.1}
    runs = {arm: {s: {"size": len(subsets[arm][s]), "steps": 3, "train_seconds": 60.0 * (1 + s) if arm == "full" else 5.0,
                      "eval_seconds": 2.0, "gold_loss": loss[arm] + 0.01 * s * (arm == "random"),
                      "metric": 1 - loss[arm] / 3}
                  for s in _arm_seeds(options)[arm]} for arm in ARMS}  # fmt: skip
    section = _section(SimpleNamespace(options=options), pool, held, scoring, subsets, base, runs)
    by = {(r.measure, r.arm): r for r in section.rows}
    assert by[("STR (selection / full fine-tuning wall-clock)", "top 10%")].ours == f"{30.0 / 90.0:.2f}"
    assert by[("held-out gold loss", "top 10% vs random 10%")].verdict == "better"
    assert by[("held-out gold loss", "top 10% vs bottom 10%")].ours.startswith("-0.5000")
    assert "2 paired seeds" in by[("held-out gold loss", "top 10% vs full pool")].ours
    assert "3 paired seeds" in by[("held-out gold loss", "top 10% vs random 10%")].ours
    assert "| 3 | - | 2.2300 / 0.2667 | - | - |" in section.body  # random's extra draw, reported
    assert by[("invalid groups (answers not parsed after re-draws)", "scoring")].ours.startswith("25.0%")
    for arm in ARMS:
        assert f"| {arm} |" in section.body
    assert t_quantile(0.975, 2) > 0  # the intervals' quantile is the one compare's stats use


def test_bottom_ties_drawn_at_random_not_by_position():
    """Many examples tie at a score of 0 (their group answered every query wrongly): the bottom arm draws among
    them with the tie seed instead of taking the first ones of the pool (which is ordered by source)."""
    scores = [0.0] * 50 + list(np.linspace(0.1, 1.0, 50))
    bottoms = [arm_subsets(scores, 0.1, [0], tie_seed=t)["bottom"][0] for t in range(5)]
    for bottom in bottoms:
        assert len(bottom) == 10 and all(scores[i] == 0.0 for i in bottom)
    assert any(bottom.tolist() != list(range(10)) for bottom in bottoms)
    assert len({tuple(b.tolist()) for b in bottoms}) > 1
    assert arm_subsets(scores, 0.1, [0], tie_seed=3)["bottom"][0].tolist() == bottoms[3].tolist()  # repeatable
    assert arm_subsets(scores, 0.1, [0])["top"][0].tolist() == list(range(90, 100))
