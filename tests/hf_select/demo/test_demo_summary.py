

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


def _students(base, arm, name="slm", mde=0.05):
    from hf_select.compare.stats import mean_sd, paired_comparison

    comp = paired_comparison(arm, base)
    return {
        "seeds": [0, 1, 2],
        "update_tokens": 61440,
        "arms": {
            "baseline": {"type": "baseline", "metrics": {"heldout_bpb": mean_sd(base)}, "vs_baseline": {},
                         "cost": {"ratio_to_baseline_training": 1.0}},
            name: {"type": name, "metrics": {"heldout_bpb": mean_sd(arm)}, "vs_baseline": {"heldout_bpb": comp},
                   "cost": {"ratio_to_baseline_training": 1.5}},
        },
    }  # fmt: skip


def test_student_rows_come_from_the_compare_study():
    rows = {r.method: r for r in summary_rows({"students": _students([3.0, 3.1, 3.2], [2.9, 3.0, 3.1])})}
    slm = rows["RHO-1 SLM"]
    assert slm.verdict.startswith("better -- decided") and "-0.1000" in slm.figure and "cost x1.50" in slm.figure
    assert rows["OPUS"].figure == NOT_COMPUTED
    noisy = {r.method: r for r in summary_rows({"students": _students([3.0, 3.1, 3.2], [3.1, 3.0, 3.15])})}
    from hf_select.compare.stats import paired_comparison

    comp = paired_comparison([3.1, 3.0, 3.15], [3.0, 3.1, 3.2])
    verdict = noisy["RHO-1 SLM"].verdict
    assert verdict.startswith(f"undetermined -- smallest detectable effect {comp['detectable_effect']:.4f} bpb")
    assert "% of the baseline" in verdict
    assert "[{:+.4f}, {:+.4f}]".format(*comp["ci"]) in noisy["RHO-1 SLM"].figure
    # every student row says what the setting can and cannot show
    assert all("It can show" in r.verdict and "it cannot show" in r.verdict for r in (slm, noisy["RHO-1 SLM"]))
