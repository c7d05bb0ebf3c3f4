"""Every built-in arm runs in a study on tiny models, and every one trains the same counted update tokens."""

from __future__ import annotations

import pytest

from hf_select.compare import run_study
from hf_select.testing import tiny_model, tiny_tokenizer


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_every_builtin_arm_trains_equal_update_tokens(study_config, tmp_path):
    reference = tmp_path / "reference"
    tiny_model("llama", seed=5, vocab_size=len(tiny_tokenizer())).save_pretrained(reference)
    tiny_tokenizer().save_pretrained(reference)
    arms = [
        "baseline",
        {"type": "random", "fraction": 0.5, "mode": "mix"},
        {"type": "attention_influence", "fraction": 0.5, "mode": "mix"},
        {"type": "slm", "reference_model_name_or_path": str(reference)},
        {"type": "slm", "name": "slm_online", "reference": "online", "reference_model_name_or_path": str(reference)},
        {"type": "meco", "cooldown_fraction": 0.25},
        {"type": "opus", "score_window": 16, "sketch_dim": 256, "proxy_batch_size": 2},
    ]
    config = study_config(arms=arms, seeds=[0])
    results = run_study(config)
    expected = config.max_steps * config.batch_size * config.seq_length
    seen = {name: arm["runs"][0]["tokens_seen"] for name, arm in results["arms"].items()}
    assert seen == dict.fromkeys(seen, expected)
    assert len({arm["runs"][0]["init_checksum"] for arm in results["arms"].values()}) == 1
    ai, rnd = results["arms"]["attention_influence"], results["arms"]["random"]
    assert ai["runs"][0]["info"]["selected_documents"] == rnd["runs"][0]["info"]["selected_documents"]
    assert ai["runs"][0]["info"]["selected_domains"] == rnd["runs"][0]["info"]["selected_domains"]
    assert results["arms"]["opus"]["cost"]["scoring_tokens_per_seed"] > 0
    assert results["arms"]["slm"]["cost"]["selection_tokens"] > 0  # the precomputed reference pass
    assert results["arms"]["slm_online"]["cost"]["scoring_tokens_per_seed"] == expected


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_attention_influence_arm_scores_with_a_selector_and_heads(study_config, tmp_path):
    import torch

    from hf_select.attention_influence.retrieval_heads import RetrievalHeads
    from hf_select.attention_influence.scorer import AttentionInfluence
    from hf_select.fingerprint import fingerprint
    from hf_select.selection import top_fraction_rows

    selector = tmp_path / "selector"
    model = tiny_model("llama", seed=3)
    model.save_pretrained(selector)
    tiny_tokenizer().save_pretrained(selector)
    heads = RetrievalHeads.from_scores(torch.arange(8.0).view(2, 4), top_fraction=0.25)
    heads.save(tmp_path / "heads.json")
    arm = {"type": "attention_influence", "selector_name_or_path": str(selector),
           "heads_file": str(tmp_path / "heads.json"), "fraction": 0.25, "mode": "filter", "max_length": 64}  # fmt: skip
    config = study_config(arms=["baseline", arm], seeds=[0], max_steps=2)
    results = run_study(config)
    ai = results["arms"]["attention_influence"]
    assert ai["cost"]["selection_tokens"] > 0 and ai["cost"]["selection_seconds"] > 0
    # the same selection computed independently: the scorer over the pool, top 25% per domain
    from hf_select.compare.study import Study

    pool = Study.load(config).pool
    scorer = AttentionInfluence(model.eval(), tiny_tokenizer(), heads.selected, 64, 8, text_column="text")
    scored = pool.map(scorer, batched=True, batch_size=64)
    expected = scored.select(top_fraction_rows(scored, "ai_score", 0.25, "domain"))["text"]
    assert ai["runs"][0]["info"]["selected_documents"] == len(expected)
    assert ai["runs"][0]["info"]["selected_checksum"] == fingerprint(sorted(expected))


@pytest.mark.usefixtures("one_thread")
def test_slm_arm_takes_given_reference_losses_and_computes_only_the_missing_ones(study_config, tmp_path):
    # reference losses handed over by an earlier pass (the main job's AttentionInfluence base pass) for half the
    # documents: the arm trains on the very rows of an arm that computes them all, and scores only the rest
    import json

    import numpy as np
    from datasets import Dataset

    from hf_select.compare.arms import SLMArmConfig, slm
    from hf_select.compare.study import Study
    from hf_select.slm.cross_tokenizer import cross_tokenizer_reference_losses

    reference = tmp_path / "reference"
    ref_tok = tiny_tokenizer(vocab_size=280)  # its own vocabulary: the losses are projected
    model = tiny_model("llama", seed=5, vocab_size=len(ref_tok))
    model.save_pretrained(reference)
    ref_tok.save_pretrained(reference)
    student = Study.load(study_config("probe")).tokenizer
    rows = [json.loads(line) for line in (tmp_path / "pool.jsonl").read_text().splitlines()]  # the fixture's pool
    computed = cross_tokenizer_reference_losses([r["text"] for r in rows], model.eval(), ref_tok, student, max_length=1024)
    for i, (row, doc) in enumerate(zip(rows, computed)):
        row["ref_loss"] = doc["ref_loss"] if i % 2 == 0 else None
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "given"))

    def build(name, **fields):
        config = study_config(name, dataset_name_or_path=str(tmp_path / "given"), seeds=[0])
        study = Study.load(config)
        arm = SLMArmConfig(name="slm", reference_model_name_or_path=str(reference), **fields)
        return slm(study, arm, 0), study

    given, with_column = build("given", reference_losses_column="ref_loss")
    plain, without = build("plain")
    assert given.info["documents_with_given_reference_losses"] == sum(v is not None for v in with_column.pool["ref_loss"]) > 0
    assert given.train_dataset["input_ids"] == plain.train_dataset["input_ids"]
    np.testing.assert_allclose(np.array(given.train_dataset["ref_loss"], dtype=float),
                               np.array(plain.train_dataset["ref_loss"], dtype=float), rtol=1e-5, atol=1e-5)  # fmt: skip
    assert 0 < with_column.selection_tokens["slm"] < without.selection_tokens["slm"]
    with pytest.raises(ValueError, match="no reference_losses_column"):
        build("bad", reference_losses_column="nope")
