import json

import numpy as np
import pytest

from hf_select.data_whisperer.scorer import DataWhisperer
from hf_select.demo import stage_data_whisperer as stage


def test_tier_auroc_hand_values():
    ranks = stage.tier_ranks(["high", "low", "medium", "low"])
    assert ranks.tolist() == [2, 0, 1, 0]
    # pairs (better, worse): (h,l1) (h,m) (h,l2) (m,l1) (m,l2) -> scores h=.9 l1=.1 m=.5 l2=.5
    scores = [0.9, 0.1, 0.5, 0.5]
    assert stage.tier_auroc(scores, ranks) == pytest.approx((1 + 1 + 1 + 1 + 0.5) / 5)
    assert stage.tier_auroc([np.nan, 0.1, 0.5, 0.7], ranks) == pytest.approx((1 + 0) / 2)
    with pytest.raises(ValueError, match="unknown tier 'great'"):
        stage.tier_ranks(["great"])


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
    assert 0.0 <= result["auroc_score_vs_tier"] <= 1.0
    assert result["STR"] == pytest.approx(
        result["selection_seconds"] / result["comparison"]["full"]["train_seconds"]
    )
    assert set(result["per_tier"]) == {"high", "medium", "low"}
    assert "AUROC" in stage.report_html(ctx, result)


def test_stage_scoring_and_auroc_quick(fake_world, monkeypatch):
    """Quick variant: real scoring and AUROC, fine-tuning comparison stubbed."""
    _stub_generation(monkeypatch)
    fake = {
        name: {"size": 1, "train_seconds": 2.0, "gold_loss": 1.0, "metric": 0.0}
        for name in ("selected", "random", "full")
    }
    monkeypatch.setattr(
        "hf_select.data_whisperer.finetune.compare_subsets",
        lambda *a, selection_seconds=None, **k: {
            **fake,
            "base": fake["full"],
            "selection_seconds": selection_seconds,
            "STR": selection_seconds / 2.0,
        },
    )
    ctx = fake_world(finetune=_finetune_rows(), finetune_heldout=6)
    result = stage.run(ctx)
    assert result["pool_size"] == 14 and result["scored_examples"] == 14
    scores = json.loads((ctx.output_dir / "stages" / "data_whisperer" / "scores.json").read_text())
    ranks = stage.tier_ranks(scores["tiers"])
    assert result["auroc_score_vs_tier"] == pytest.approx(stage.tier_auroc(scores["scores"], ranks))
    assert result["STR"] == pytest.approx(result["selection_seconds"] / 2.0)
    assert "<img" in stage.report_html(ctx, result)
