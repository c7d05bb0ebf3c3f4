import math

import pytest

from hf_select.demo.students import mean_and_spread, paired_verdict
from hf_select.demo.summary import NOT_COMPUTED, summary_html, summary_rows


def test_every_row_says_not_computed_without_results():
    rows = summary_rows({})
    assert len(rows) >= 10
    assert all(r.figure == NOT_COMPUTED and r.verdict == NOT_COMPUTED for r in rows)
    page = summary_html({})
    assert page.count(NOT_COMPUTED) == 2 * len(rows) and "nan" not in page.lower()


def test_unscored_data_whisperer_is_not_a_number():
    # every group invalid: the AUROC is NaN and the fine-tuning comparison ran on an arbitrary "selection"
    dw = {
        "auroc_high_vs_low": float("nan"),
        "invalid_group_share": 1.0,
        "dw_stats": {"groups": 12},
        "pool_size": 60,
        "selection_valid": False,
        "comparison": {
            "selected": {"gold_loss": 2.0},
            "random": {"gold_loss": 2.1, "gold_loss_std": 0.01},
            "STR": 0.5,
        },
    }
    auroc, tune = [r for r in summary_rows({"data_whisperer": dw}) if r.method == "Data Whisperer"]
    assert f"AUROC {NOT_COMPUTED}" in auroc.figure and "invalid 100%" in auroc.figure
    assert auroc.verdict.startswith("not readable")
    assert tune.verdict.startswith("not readable") and "nan" not in tune.figure.lower()


def test_masking_check_row_reads_the_drops():
    check = {
        "none": {"sample_accuracy": 0.6, "first_token_accuracy": 0.8, "token_accuracy": 0.9},
        "top": {"sample_accuracy": 0.06, "first_token_accuracy": 0.1, "token_accuracy": 0.5},
        "random": {"sample_accuracy": 0.57, "first_token_accuracy": 0.8, "token_accuracy": 0.9},
        "random_draws": [{"sample_accuracy": 0.54}, {"sample_accuracy": 0.6}],
        "relative_drop": {"top": {"sample_accuracy": 0.9}, "random": {"sample_accuracy": 0.05}},
    }
    row = summary_rows({"retrieval_heads": {"selected": [[1, 2]], "masking_check": check}})[0]
    assert "0.600 / 0.060 / 0.570" in row.figure and row.verdict.startswith("as expected")
    check["relative_drop"]["random"]["sample_accuracy"] = 0.3
    row = summary_rows({"retrieval_heads": {"selected": [[1, 2]], "masking_check": check}})[0]
    assert row.verdict.startswith("not as expected")


def test_student_rows_use_the_paired_verdict():
    base = {"heldout_bits_per_byte": mean_and_spread([3.0, 3.1, 3.2])}
    slm = {"heldout_bits_per_byte": mean_and_spread([2.9, 3.0, 3.1])}  # 0.1 lower on every seed
    rows = {r.method: r for r in summary_rows({"student_baseline": base, "student_slm": slm})}
    assert rows["RHO-1 SLM"].verdict == "better" and "-0.1000" in rows["RHO-1 SLM"].figure
    assert rows["OPUS"].figure == NOT_COMPUTED


def test_paired_verdict_hand_values():
    # differences 0.1, 0.3, 0.2: mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3) = 3.46 < 4.30 (df 2)
    out = paired_verdict([3.1, 3.3, 3.2], [3.0, 3.0, 3.0])
    assert out["difference"] == pytest.approx(0.2) and out["t"] == pytest.approx(3.46, abs=0.01)
    assert out["verdict"] == "no difference detectable at this budget"
    assert paired_verdict([3.5, 3.51, 3.49], [3.0, 3.0, 3.0])["verdict"] == "worse"
    assert paired_verdict([1.0], [2.0])["verdict"] == "no difference detectable at this budget"


def test_mean_and_spread():
    out = mean_and_spread([1.0, 2.0, 3.0])
    assert out["mean"] == 2.0 and out["std"] == 1.0 and out["values"] == [1.0, 2.0, 3.0]
    assert mean_and_spread([4.0])["std"] == 0.0 and not math.isnan(mean_and_spread([4.0])["mean"])
