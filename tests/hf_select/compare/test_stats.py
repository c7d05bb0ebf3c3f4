"""The statistics of ``hf-select compare`` against values computed by hand from tabulated Student quantiles."""

from __future__ import annotations

import math

import pytest

from hf_select.compare.stats import (
    detectable_effect,
    paired_comparison,
    seeds_needed,
    t_cdf,
    t_quantile,
)

# Student t quantiles from printed tables (e.g. NIST/SEMATECH e-Handbook, Table 1.3.6.7.2)
TABLE = {(0.975, 1): 12.706, (0.975, 2): 4.303, (0.975, 4): 2.776, (0.975, 29): 2.045,
         (0.8, 1): 1.376, (0.8, 2): 1.061, (0.8, 4): 0.941, (0.95, 10): 1.812}  # fmt: skip


@pytest.mark.parametrize(("p", "df"), sorted(TABLE))
def test_t_quantile_matches_the_table(p, df):
    assert t_quantile(p, df) == pytest.approx(TABLE[(p, df)], abs=1e-3)
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-10)
    assert t_quantile(1 - p, df) == pytest.approx(-TABLE[(p, df)], abs=1e-3)


def test_paired_interval_and_detectable_effect_by_hand():
    arm, base = [1.0, 2.0, 3.0], [0.5, 1.0, 2.5]  # differences 0.5, 1.0, 0.5
    out = paired_comparison(arm, base)
    mean, sd = 2 / 3, math.sqrt(((0.5 - 2 / 3) ** 2 * 2 + (1 / 3) ** 2) / 2)
    half = 4.303 * sd / math.sqrt(3)
    assert out["n"] == 3
    assert out["difference"] == pytest.approx(mean)
    assert out["sd"] == pytest.approx(sd)
    assert out["ci"] == pytest.approx([mean - half, mean + half], abs=1e-3)
    assert out["verdict"] == "undetermined"  # the interval holds 0
    assert out["detectable_effect"] == pytest.approx((4.303 + 1.061) * sd / math.sqrt(3), abs=1e-3)


def test_verdict_direction():
    base = [3.0, 3.1, 2.9, 3.05]
    lower = [b - d for b, d in zip(base, (0.10, 0.11, 0.09, 0.10))]
    assert paired_comparison(lower, base)["verdict"] == "better"  # lower bpb
    assert paired_comparison(lower, base, lower_is_better=False)["verdict"] == "worse"  # lower accuracy
    assert paired_comparison(base, lower)["verdict"] == "worse"
    single = paired_comparison([1.0], [2.0])
    assert single["verdict"] == "undetermined" and single["ci"] is None and single["detectable_effect"] is None


def test_seeds_needed_is_the_first_n_that_detects():
    sd = 0.02
    n = seeds_needed(sd, effect=0.02)
    assert detectable_effect(sd, n) <= 0.02 < detectable_effect(sd, n - 1)
    # 5 seeds: (t(0.975, 4) + t(0.8, 4)) * sd / sqrt(5)
    assert detectable_effect(sd, 5) == pytest.approx((2.776 + 0.941) * sd / math.sqrt(5), abs=1e-4)
    with pytest.raises(ValueError):
        seeds_needed(sd, 0.0)
    with pytest.raises(ValueError, match="as many"):
        paired_comparison([1.0, 2.0], [1.0])
