"""The OPUS replication's pieces (hf_select/replicate/opus.py) on tiny fixtures: the quality-labelled pool, the
proxy-task items, the low-quality share over time and the overhead printout; the compare arm's selection modes."""

from __future__ import annotations

import json
import math
import random
import re

import pytest
from datasets import Dataset

from hf_select.replicate.opus import (
    OpusReplicationOptions,
    build_quality_pool,
    degrade_text,
    domain_shares,
    low_share_by_quarter,
    parse_overhead,
    retrieve_proxy,
    run_low_shares,
    task_files,
    task_item_records,
    write_task_items,
)


def _medium(per_domain: int = 6) -> Dataset:
    rows = {"text": [], "domain": [], "source": []}
    for domain in ("prose", "code", "math", "literature", "other"):
        for i in range(per_domain):
            rows["text"].append(f"{domain} document {i} " + " ".join(f"w{j}" for j in range(40)))
            rows["domain"].append(domain)
            rows["source"].append(f"src-{domain}")
    return Dataset.from_dict(rows)


def _lowq(n: int = 5) -> Dataset:
    return Dataset.from_dict({"text": [f"fortune {i} " * 20 for i in range(n)], "source": ["fortunes"] * n})


def test_quality_pool_counts_labels_and_degraded_documents_from_outside_the_pool():
    options = OpusReplicationOptions(medium_documents_per_domain=3, lowq_documents=4, degraded_documents=5, max_chars=100)
    medium = _medium()
    pool = build_quality_pool(medium, _lowq(), options)
    by_domain = {d: [r for r in pool if r["domain"] == d] for d in {r["domain"] for r in pool}}
    assert {d: len(rs) for d, rs in by_domain.items()} == {
        "prose": 3, "code": 3, "math": 3, "literature": 3, "lowq": 4, "degraded": 5,
    }  # fmt: skip
    assert all(r["quality"] == ("low" if r["domain"] in ("lowq", "degraded") else "medium") for r in pool)
    assert all(len(r["text"]) <= 100 for r in pool if r["domain"] != "degraded")
    in_pool = {r["text"] for r in pool}
    clipped = [t[:100] for t in medium["text"] if t.split()[0] != "other"]
    for r in by_domain["degraded"]:
        # the words of one clipped medium document that is not itself in the pool, in another order
        same_words = [t for t in clipped if sorted(t.split()) == sorted(r["text"].split())]
        assert same_words and same_words[0] not in in_pool and same_words[0] != r["text"]
    assert build_quality_pool(medium, _lowq(), options) == pool  # seeded
    assert build_quality_pool(medium, _lowq(), OpusReplicationOptions(
        medium_documents_per_domain=3, lowq_documents=4, degraded_documents=5, max_chars=100, seed=1)) != pool  # fmt: skip


def test_proxy_is_the_most_similar_documents_outside_the_excluded_domains():
    records = [
        {"text": "the mitochondria is the powerhouse of the cell", "domain": "degraded"},
        {"text": "cell biology: the mitochondria of the cell", "domain": "prose"},
        {"text": "def add(a, b): return a + b", "domain": "code"},
        {"text": "mitochondria powerhouse cell", "domain": "lowq"},
    ]
    targets = ["Question: what is the powerhouse of the cell?\nAnswer: the mitochondria"]
    proxy = retrieve_proxy(records, targets, 2, exclude_domains=["degraded"])
    assert {r["domain"] for r in proxy} == {"prose", "lowq"}
    assert proxy[0]["proxy_similarity"] >= proxy[1]["proxy_similarity"] > 0
    assert retrieve_proxy(records, targets, 1)[0]["domain"] == "degraded"  # the closest, when not excluded


def test_degrade_text_keeps_the_words():
    text = "one two three\nfour five six seven"
    out = degrade_text(text, random.Random(0))
    assert sorted(out.split()) == sorted(text.split()) and "\n" not in out


def _task(tmp_path, name, kind, test, train, **extra):
    (tmp_path / f"{name}.test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    (tmp_path / f"{name}.train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    lines = [f"name: {name}", f"type: {kind}", "data_files:", f"  test: {name}.test.jsonl",
             f"  train: {name}.train.jsonl", "split: test"] + [f"{k}: {v!r}" for k, v in extra.items()]  # fmt: skip
    (tmp_path / f"{name}.yaml").write_text("\n".join(lines) + "\n")


def test_task_items_come_from_the_test_split_with_the_gold_answer(tmp_path):
    from eval.tasks import load_task

    mc_test = [{"query": f"Q{i}?\nAnswer:", "choices": ["red", "blue", "green"], "gold": i % 3} for i in range(4)]
    mc_train = [{"query": "TRAIN ITEM", "choices": ["x", "y"], "gold": 0}]
    _task(tmp_path, "quiz", "multiple_choice", mc_test, mc_train)
    _task(tmp_path, "solve", "gold_bpb", [{"query": "2+2=", "gold": "four " * 50}], [{"query": "TRAIN", "gold": "g"}],
          target_delimiter="")  # fmt: skip
    (tmp_path / "notrain.yaml").write_text("name: notrain\ntype: perplexity\ndata_files:\n  test: x.jsonl\n")
    paths = task_files(tmp_path)
    assert [p.stem for p in paths] == ["quiz", "solve"]
    records = task_item_records(paths, per_task=3, max_chars=20)
    assert [r["gold"] for r in records] == [" red", " blue", " green", ("four " * 50)[:20]]
    assert [r["task"] for r in records] == ["quiz"] * 3 + ["solve"]
    assert not any("TRAIN" in r["query"] for r in records)
    task = load_task(write_task_items(records, tmp_path / "out"))
    assert task.type == "gold_bpb" and task.target_delimiter == ""


def _run(entries, steps):
    return {"steps": steps, "info": {"domain_shares": [
        {"step": s, "selected": {"lowq": a, "degraded": b, "prose": 1 - a - b}, "offered": {"lowq": 0.3, "degraded": 0.2}}
        for s, a, b in entries]}}  # fmt: skip


def test_low_share_by_quarter_hand_values():
    # 8 steps logged every 2: quarters hold steps (2), (4), (6), (8)
    one = _run([(2, 0.5, 0.1), (4, 0.3, 0.1), (6, 0.2, 0.0), (8, 0.1, 0.0)], steps=8)
    two = _run([(2, 0.3, 0.1), (4, 0.3, 0.3), (6, 0.0, 0.0), (8, 0.1, 0.1)], steps=8)
    quarters = low_share_by_quarter([one, two])
    assert [round(q["selected"], 6) for q in quarters] == [0.5, 0.5, 0.1, 0.15]
    assert all(q["offered"] == pytest.approx(0.5) for q in quarters)
    assert all(math.isnan(q["selected"]) for q in low_share_by_quarter([_run([], steps=8)]))  # nothing logged
    sel, off = run_low_shares(one)
    assert sel == pytest.approx((0.6 + 0.4 + 0.2 + 0.1) / 4) and off == pytest.approx(0.5)
    per_domain = domain_shares([one, two])
    assert per_domain["lowq"][0] == pytest.approx((0.5 + 0.3 + 0.2 + 0.1 + 0.3 + 0.3 + 0.0 + 0.1) / 8)
    assert per_domain["prose"][1] == 0.0 and per_domain["degraded"][1] == pytest.approx(0.2)


def test_parse_overhead_reads_the_floor_and_the_first_table():
    text = (
        "OPUS overhead: llama hidden 128 x 4 layers, ...\n"
        "floor = 1 + scoring/training tokens 1.250 x (fwd + activation-only bwd 0.418 s) / (fwd + full bwd 0.454 s)"
        " = 1 + 1.250 x 0.922 = 2.152\n"
        "variant           s/step  x random     gap  x own step  gap own  train step  score fwd/bwd  sketch+ip   select\n"
        "random             0.431     1.000               1.000                0.431          0.000      0.000   0.0000\n"
        "opus               0.981     2.279   +5.9%       2.291    +6.4%       0.428          0.424      0.125   0.0010\n"
        "scoring alone, interleaved call by call (one buffer, after one AdamW step; CPU seconds per call):\n"
        "variant          opus_select  sketch+ip  alignment error vs exact\n"
        "opus                  0.5421     0.1113                    0.0000\n"
    )
    assert parse_overhead(text) == {"floor": 2.152, "opus_x_random": 2.279}
    assert parse_overhead("nothing") == {}


def test_the_benchmark_prints_what_parse_overhead_reads():
    from pathlib import Path

    source = (Path(__file__).parents[3] / "benchmarks" / "opus_overhead.py").read_text()
    assert re.search(r"= \{floor:\.3f\}", source) and "x random" in source


def test_opus_arm_selection_modes_are_checked():
    from hf_select.compare.config import parse_arm

    kind, config = parse_arm({"type": "opus", "selection": "topk"})
    assert kind == "opus" and config.selection == "topk"
    with pytest.raises(ValueError, match="selection must be one of"):
        parse_arm({"type": "opus", "selection": "softmax"})
    with pytest.raises(ValueError, match="conflicts"):
        parse_arm({"type": "opus", "selection": "topk", "greedy": True})


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_opus_arms_record_domain_shares_and_pass_the_selection(tmp_path):
    from hf_select.compare import StudyConfig, run_study
    from hf_select.testing import TINY_WORDS, tiny_tokenizer

    rng = random.Random(0)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(
        json.dumps({"text": " ".join(rng.choice(TINY_WORDS[d::2]) for _ in range(40)), "domain": domain}) + "\n"
        for d, domain in enumerate(("prose", "lowq")) for _ in range(30)))  # fmt: skip
    tiny_tokenizer().save_pretrained(tmp_path / "tok")
    common = {"type": "opus", "score_window": 16, "sketch_dim": 256, "proxy_batch_size": 2}
    config = StudyConfig(
        output_dir=str(tmp_path / "study"), dataset_name_or_path=str(pool), tokenizer_name_or_path=str(tmp_path / "tok"),
        model_config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64},
        heldout_documents_per_domain=4, proxy_documents_per_domain=4, seq_length=32, batch_size=4, max_steps=4,
        logging_steps=2, save_steps=2, seeds=[0], learning_rate=1e-2, warmup_steps=0,
        arms=["baseline", {**common, "name": "boltzmann"}, {**common, "name": "topk", "selection": "topk"}],
    )  # fmt: skip
    results = run_study(config)
    for name in ("boltzmann", "topk"):
        info = results["arms"][name]["runs"][0]["info"]
        shares = info["domain_shares"]
        assert [e["step"] for e in shares] == [2, 4]
        for e in shares:
            assert sum(e["selected"].values()) == pytest.approx(1, abs=1e-3)
            assert sum(e["offered"].values()) == pytest.approx(1, abs=1e-3)
            assert set(e["offered"]) <= set(info["candidate_row_domains"])
    # top-k takes no draw: its first-draw ESS is 1; Boltzmann sampling over 8 candidates spreads it
    assert all(e["ess"] == 1.0 for e in results["arms"]["topk"]["runs"][0]["info"]["domain_shares"])
    assert all(e["ess"] > 1.0 for e in results["arms"]["boltzmann"]["runs"][0]["info"]["domain_shares"])
