import math

import numpy as np
import pytest
from datasets import Dataset

from hf_select.selection import (
    combine_by_rank,
    rank_percentiles,
    select_top_fraction,
    top_fraction_indices,
    upweighted_mix,
)


def _scored():
    return Dataset.from_dict(
        {
            "id": list(range(10)),
            "domain": ["web"] * 5 + ["code"] * 5,
            "ai_score": [0.1, 0.5, math.nan, 0.3, 0.9, 10.0, 20.0, 5.0, 30.0, 1.0],
            "quality": [5, 4, 3, 2, 1, 1, 2, 3, 4, 5],
        }
    )


def test_top_fraction_per_domain():
    picked = select_top_fraction(_scored(), "ai_score", fraction=0.4, by="domain")
    assert picked["id"] == [1, 4, 6, 8]  # 2 of 5 per domain, original order, NaN never chosen
    assert sorted(select_top_fraction(_scored(), "ai_score", 0.2, by=None)["id"]) == [6, 8]


def test_top_fraction_indices_ties_and_errors():
    assert top_fraction_indices([1.0, 2.0, 2.0, 0.0], 0.25).tolist() == [1]
    assert top_fraction_indices([math.nan, math.nan], 0.5).tolist() == []
    assert top_fraction_indices([3.0], 0.01).tolist() == [0]  # at least one
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_indices([1.0], 1.5)
    with pytest.raises(KeyError, match="group column 'lang'"):
        select_top_fraction(_scored(), "ai_score", by="lang")
    with pytest.raises(KeyError, match="score column 'nope'"):
        select_top_fraction(_scored(), "nope")


def test_upweighted_mix_adds_the_subset():
    full = _scored()
    picked = select_top_fraction(full, "ai_score", 0.4)
    mix = upweighted_mix(full, picked, repeats=2, seed=None)
    assert len(mix) == 10 + 2 * 4
    assert sum(mix["upweighted"]) == 8
    assert sorted(mix["id"]) == sorted(list(range(10)) + [1, 4, 6, 8] * 2)


def test_rank_combination_by_hand():
    np.testing.assert_allclose(rank_percentiles([3.0, 1.0, 2.0, 2.0]), [1.0, 0.0, 0.5, 0.5])
    combined = combine_by_rank(_scored(), ["ai_score", "quality"], weights=[1, 1], by="domain")
    values = combined["combined_score"]
    # web: ai ranks (of 4 valid) 0.1->0, 0.5->2/3, 0.3->1/3, 0.9->1; quality ranks 5->1, 4->.75, 2->.25, 1->0
    assert values[0] == pytest.approx((0 + 1) / 2)
    assert values[1] == pytest.approx((2 / 3 + 0.75) / 2)
    assert math.isnan(values[2])
    assert values[8] == pytest.approx((1 + 0.75) / 2)
