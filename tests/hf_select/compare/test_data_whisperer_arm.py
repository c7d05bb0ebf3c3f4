"""The ``data_whisperer`` arm: top fraction per domain of a question/answer pool by Data Whisperer score,
trained on as rendered text, paired with a ``random`` arm of the same per-domain size."""

from __future__ import annotations

import json
import math
import random

import pytest

from hf_select.compare import run_study
from hf_select.compare.arms import data_whisperer, render_qa
from hf_select.compare.config import parse_arm
from hf_select.compare.study import Study
from hf_select.fingerprint import fingerprint
from hf_select.testing import TINY_WORDS, tiny_model, tiny_tokenizer


def write_qa_pool(path, per_domain: int = 40, seed: int = 0):
    """Question/answer examples in two domains; ``text`` is the rendered example (what the baseline and the
    random arm train on); some scores are missing (NaN)."""
    rng = random.Random(seed)
    rows = []
    for d, domain in enumerate(("alpha", "beta")):
        words = TINY_WORDS[d::2]
        for i in range(per_domain):
            q = " ".join(rng.choice(words) for _ in range(rng.randint(8, 20)))
            a = " ".join(rng.choice(words) for _ in range(rng.randint(2, 12)))
            score = None if i % 9 == 0 else rng.random()
            rows.append({"question": q, "answer": a, "text": render_qa(q, a), "domain": domain, "dw_score": score})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def expected_texts(pool, column: str, fraction: float) -> list[str]:
    """Independent selection: per domain, the round(fraction x n) highest scores, missing scores last."""
    chosen = []
    for domain in sorted(set(pool["domain"])):
        rows = [r for r in pool if r["domain"] == domain]
        key = [(-math.inf if r[column] is None or r[column] != r[column] else r[column]) for r in rows]
        order = sorted(range(len(rows)), key=lambda i: (-key[i], i))[: round(fraction * len(rows))]
        chosen += [render_qa(rows[i]["question"], rows[i]["answer"]) for i in order]
    return chosen


@pytest.mark.usefixtures("one_thread")
def test_trains_on_the_top_fraction_paired_with_random(study_config, tmp_path):
    pool = write_qa_pool(tmp_path / "qa.jsonl")
    arms = ["baseline", {"type": "data_whisperer", "fraction": 0.25},
            {"type": "random", "fraction": 0.25, "mode": "filter"}]  # fmt: skip
    config = study_config(dataset_name_or_path=str(pool), arms=arms, seeds=[0], max_steps=2, proxy_documents_per_domain=0)
    results = run_study(config)
    dw, rnd = results["arms"]["data_whisperer"], results["arms"]["random"]
    seen = {name: arm["runs"][0]["tokens_seen"] for name, arm in results["arms"].items()}
    assert seen == dict.fromkeys(seen, config.max_steps * config.batch_size * config.seq_length)
    expected = expected_texts(Study.load(config).pool, "dw_score", 0.25)
    info = dw["runs"][0]["info"]
    assert info["selected_documents"] == len(expected) == rnd["runs"][0]["info"]["selected_documents"]
    assert info["selected_checksum"] == fingerprint(sorted(expected))
    assert info["selected_domains"] == rnd["runs"][0]["info"]["selected_domains"]
    assert info["unscored_examples"] > 0


def test_refuses_a_pool_without_question_answer_columns(study_config):
    study = Study.load(study_config(arms=["baseline"]))  # the text-only pool of conftest
    _, config = parse_arm({"type": "data_whisperer"})
    with pytest.raises(ValueError, match=r"no \['question', 'answer'\] column"):
        data_whisperer(study, config, 0)


def test_fields_come_from_data_whisperer_config():
    from hf_select.compare.config import arms_help

    _, config = parse_arm({"type": "data_whisperer", "n_demos": 2, "selector_name_or_path": "x"})
    assert config.whisperer_config().n_demos == 2
    assert "    n_demos (default 5)" in arms_help() and "    selector_name_or_path" in arms_help()
    with pytest.raises(ValueError, match="query_mode"):
        parse_arm({"type": "data_whisperer", "query_mode": "both"})


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_scores_with_a_selector_model(study_config, tmp_path):
    """The plumbing of live scoring: cost recorded, selection = the scorer's own scores' top half per domain.
    (A random tiny model answers nothing right, so its scores tie and the selection falls back on position;
    the ranking itself is checked by the precomputed-scores test.)"""
    from hf_select.data_whisperer.scorer import DataWhisperer

    pool = write_qa_pool(tmp_path / "qa.jsonl", per_domain=20)
    selector = tmp_path / "selector"
    model = tiny_model("qwen2", seed=3)
    model.save_pretrained(selector)
    tiny_tokenizer().save_pretrained(selector)
    fields = {"n_demos": 2, "n_queries": 1, "max_answer_tokens": 4, "max_retries": 0}
    arm = {"type": "data_whisperer", "selector_name_or_path": str(selector), "fraction": 0.5, **fields}
    config = study_config(dataset_name_or_path=str(pool), arms=["baseline", arm], seeds=[0], max_steps=2,
                          proxy_documents_per_domain=0)  # fmt: skip
    results = run_study(config)
    dw = results["arms"]["data_whisperer"]
    assert dw["cost"]["selection_tokens"] > 0 and dw["cost"]["selection_seconds"] > 0
    study_pool = Study.load(config).pool
    scores = DataWhisperer(model.eval(), tiny_tokenizer(), **fields).score(study_pool)
    expected = expected_texts(study_pool.add_column("ref", scores.tolist()), "ref", 0.5)
    assert dw["runs"][0]["info"]["selected_checksum"] == fingerprint(sorted(expected))
