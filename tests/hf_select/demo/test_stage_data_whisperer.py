import json

import numpy as np
import pytest

import hf_select.data_whisperer.experiment as experiment
from hf_select.data_whisperer.experiment import tier_auroc, tier_ranks
from hf_select.data_whisperer.scorer import DataWhisperer
from hf_select.demo import stage_data_whisperer as stage


def test_tier_auroc_hand_values():
    ranks = tier_ranks(["high", "low", "medium", "low"])
    assert ranks.tolist() == [2, 0, 1, 0]
    # pairs (better, worse): (h,l1) (h,m) (h,l2) (m,l1) (m,l2) -> scores h=.9 l1=.1 m=.5 l2=.5
    scores = [0.9, 0.1, 0.5, 0.5]
    assert tier_auroc(scores, ranks) == pytest.approx((1 + 1 + 1 + 1 + 0.5) / 5)
    assert tier_auroc([np.nan, 0.1, 0.5, 0.7], ranks) == pytest.approx((1 + 0) / 2)
    with pytest.raises(ValueError, match="unknown tier 'great'"):
        tier_ranks(["great"])


def _finetune_rows():
    rows = {"question": [], "answer": [], "tier": [], "source": []}
    for i in range(30):
        tier = ["high", "medium", "low"][i % 3]
        rows["question"].append(f"What is {i} + {i}?")
        rows["answer"].append(f"{2 * i}" if tier != "low" else "the quick brown fox")
        rows["tier"].append(tier)
        rows["source"].append({"high": "python-faq", "medium": "foldoc", "low": "wordnet"}[tier])
    return rows


def _stub_generation(monkeypatch):
    """Every answer is "2" (the stage scores queries separately: one batched generation per group)."""
    monkeypatch.setattr(DataWhisperer, "generate_fn", staticmethod(lambda ids: " 2\nAnswer 2: 4\nAnswer 3: 6"))
    monkeypatch.setattr(
        "hf_select.generation.greedy_generate",
        lambda model, tok, prompts, *a, **k: [" 2"] * len(k.get("input_ids") or prompts),
    )


@pytest.mark.slow
def test_stage_runs_on_a_fake_world(fake_world, monkeypatch):
    _stub_generation(monkeypatch)
    ctx = fake_world(finetune=_finetune_rows(), finetune_heldout=6)
    result = stage.run(ctx)
    assert json.loads(json.dumps(result)) == result  # JSON-ready: a reused stage reads back the same result
    assert result["pool_size"] == 14 and result["scored_examples"] == 14
    assert result["invalid_group_share"] == 0.0
    # STR and AUROC against controlled timings and scores: the test below
    assert set(result["per_tier"]) == {"high", "medium", "low"}
    assert "AUROC" in stage.report_html(ctx, result)


@pytest.mark.parametrize("order, auroc", [("tier", 1.0), ("reversed", 0.0)])
def test_stage_str_and_auroc_against_controlled_timings_and_scores(fake_world, monkeypatch, order, auroc):
    """Selection takes 3.0 s on a fake clock and fine-tuning ``2 s x rows``: STR must be 3 / (2 x pool). Scores
    follow the tiers (or their reverse): AUROC must be 1 (or 0), high vs low too, and the top fraction is high
    (or low) tier only. The fine-tuning and held-out evaluation run for real (tiny model)."""
    _stub_generation(monkeypatch)
    clock = [100.0]
    monkeypatch.setattr(experiment, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: clock[0])}))
    value = {"high": 0.9, "medium": 0.5, "low": 0.1}

    def score(self, dataset, *args, **kwargs):
        clock[0] += 3.0  # the selection's wall-clock
        self.stats, self.unparsed, self.resumed_seconds = {"groups": 1, "invalid_groups": 0}, [], 0.0
        scores = np.array([value[t] for t in dataset["tier"]]) + 1e-3 * np.arange(len(dataset))
        return scores if order == "tier" else -scores

    trained = []

    def finetune(model, tokenizer, subset, args):
        trained.append(len(subset))
        return model, 2.0 * len(subset)

    monkeypatch.setattr(DataWhisperer, "score", score)
    monkeypatch.setattr("hf_select.data_whisperer.finetune.finetune", finetune)
    ctx = fake_world(finetune=_finetune_rows(), finetune_heldout=6)
    result = stage.run(ctx)
    pool = result["pool_size"]
    assert max(trained) == pool == 14
    assert result["selection_seconds"] == 3.0
    assert result["STR"] == pytest.approx(3.0 / (2.0 * pool))
    assert result["auroc_score_vs_tier"] == auroc and result["auroc_high_vs_low"] == auroc
    top = "high" if order == "tier" else "low"
    assert result["per_tier"][top]["share_of_top"] == 1.0
    assert "<img" in stage.report_html(ctx, result)
