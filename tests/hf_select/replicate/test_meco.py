"""The MeCo replication's pieces: another source's host (a derangement), the prefix token share, the URL-conditioned
held-out bits per byte against an independent forward pass, the probe arms' rows equal to MeCoTrainer's and their
shared optimiser, and (slow) the whole replication on a tiny study."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset

from hf_select.compare import StudyConfig
from hf_select.compare.arms import meco
from hf_select.compare.study import Study
from hf_select.meco.metadata import official_host
from hf_select.replicate import ReplicationConfig, run_replication
from hf_select.replicate.meco import (
    MeCoUrlProbeConfig,
    UrlProbeBaselineConfig,
    baseline_url_probe,
    meco_url_probe,
    other_source_hosts,
    prefix_token_share,
    url_metrics,
)
from hf_select.testing import TINY_WORDS, tiny_model, tiny_tokenizer

HOSTS = {"alpha": ["a.example", "www.a2.example"], "beta": ["b.example"]}


def test_other_source_hosts_is_a_derangement():
    seen = ["c.org", "a.org", "b.org", "a.org"]
    assert other_source_hosts(["a.org", "b.org", "c.org", "a.org"], seen) == ["b.org", "c.org", "a.org", "b.org"]
    assert other_source_hosts(["z.org"], seen) == ["a.org"]  # a host never seen gets a seen one
    hosts = [f"h{i}.net" for i in range(7)]
    assert all(o != h for h, o in zip(hosts, other_source_hosts(hosts, hosts)))
    with pytest.raises(ValueError, match="at least 2 hosts"):
        other_source_hosts(["a.org"], ["a.org"])


def test_prefix_token_share_counts_masked_tokens_less_bos():
    rows = {
        # two documents: BOS + 2 prefix tokens + 3 text tokens, then BOS + 1 prefix + 1 text (+ 1 EOS)
        "labels": [[-100, -100, -100, 5, 6, 7, -100, -100, 8, 2]],
        "position_ids": [[0, 1, 2, 3, 4, 5, 0, 1, 2, 3]],
    }
    assert prefix_token_share(rows) == pytest.approx(3 / 10)
    assert prefix_token_share({"labels": [[-100, 4, 5]], "position_ids": [[0, 1, 2]]}) == 0.0


def _pool(per_domain: int = 24, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for d, (domain, hosts) in enumerate(HOSTS.items()):
        words = TINY_WORDS[d::2]
        for i in range(per_domain):
            host = hosts[i % len(hosts)]
            text = " ".join(rng.choice(words) for _ in range(rng.randint(12, 30)))
            rows.append({"text": text, "domain": domain, "url": f"https://{host}/page/{i}"})
    return rows


def _bpb_by_hand(model, tokenizer, texts, prefixes) -> float:
    """Bits per byte of ``texts`` after their prefixes: one forward per document, no padding, no helper."""
    nats = 0.0
    for text, prefix in zip(texts, prefixes):
        meta = tokenizer(prefix, add_special_tokens=False).input_ids
        ids = tokenizer(text, add_special_tokens=False).input_ids
        full = torch.tensor([[tokenizer.bos_token_id, *meta, *ids]])
        with torch.no_grad():
            logp = torch.log_softmax(model(full).logits[0].double(), -1)
        start = 1 + len(meta)
        nats -= sum(float(logp[start - 1 + j, tok]) for j, tok in enumerate(ids))
    return nats / math.log(2) / sum(len(t.encode("utf-8")) for t in texts)


def test_url_metrics_match_an_independent_forward():
    tokenizer = tiny_tokenizer()
    model = tiny_model("llama", seed=0).eval()
    pool = Dataset.from_list(_pool())
    heldout = Dataset.from_list(_pool(per_domain=3, seed=1))
    study = SimpleNamespace(
        pool=pool, heldout=heldout, tokenizer=tokenizer, config=SimpleNamespace(eval_batch_size=2),
        cached=lambda key, fn, **_: fn(),
    )  # fmt: skip
    got = url_metrics(study, model, "url", "host", "www.unseen.example")
    seen = sorted({official_host(u) for u in pool["url"]})
    expected = {}
    for key, hosts in {
        "own": None, "other_source": "other", "unseen": "unseen",
    }.items():
        per_domain = []
        for domain in sorted(HOSTS):
            docs = [r for r in heldout if r["domain"] == domain]
            own = [official_host(r["url"]) for r in docs]
            chosen = (own if hosts is None else other_source_hosts(own, seen) if hosts == "other"
                      else ["www.unseen.example"] * len(own))  # fmt: skip
            per_domain.append(_bpb_by_hand(model, tokenizer, [r["text"] for r in docs], [f"URL: {h}\n\n" for h in chosen]))
        expected[f"heldout_bpb_{key}_url"] = sum(per_domain) / len(per_domain)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-5)
    assert got["heldout_bpb_own_url"] != pytest.approx(got["heldout_bpb_other_source_url"], rel=1e-6)


@pytest.fixture
def tiny_study(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in _pool()))
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")

    def make(**overrides):
        fields = dict(
            output_dir=str(tmp_path / "study"), dataset_name_or_path=str(pool),
            tokenizer_name_or_path=str(tmp_path / "tokenizer"),
            model_config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128},
            heldout_documents_per_domain=3, seq_length=32, batch_size=4, max_steps=4, logging_steps=1, save_steps=2,
            seeds=[0, 1], learning_rate=1e-2, warmup_steps=0,
        )  # fmt: skip
        fields.update(overrides)
        return StudyConfig(**fields)

    return make


def test_probe_arms_train_trainer_rows_with_one_optimiser(tiny_study, tmp_path):
    from hf_select.trainer_ext.meco_config import MeCoConfig
    from hf_select.trainer_ext.meco_trainer import packed_pool

    study = Study.load(tiny_study())
    arm = MeCoUrlProbeConfig(name="meco", cooldown_fraction=0.25, cooldown_pool_fraction=0.25, adam_beta2=0.9)
    setup = meco_url_probe(study, arm, seed=0)
    plain = meco(study, arm, seed=0)
    args = MeCoConfig(output_dir=str(tmp_path / "args"), max_steps=4, max_length=32, use_cpu=True)
    want_cond = packed_pool(plain.train_dataset, study.tokenizer, args, conditioned=True)
    want_cool = packed_pool(plain.trainer_kwargs["cooldown_dataset"], study.tokenizer, args, conditioned=False)
    for got, want in ((setup.train_dataset, want_cond), (setup.trainer_kwargs["cooldown_dataset"], want_cool)):
        for column in ("input_ids", "labels", "position_ids"):
            assert got[column] == want[column]
    assert 0 < setup.info["prefix_token_share"] < 1
    base = baseline_url_probe(study, UrlProbeBaselineConfig(name="standard", adam_beta2=0.9), seed=0)
    assert base.extra_metrics is not None
    # the arms differ in their data only: one optimiser and schedule (MeCoConfig's own defaults differ from
    # TrainingArguments' in beta2)
    shared = {"adam_beta2": 0.9, "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": 0.1}}
    assert {k: setup.args[k] for k in shared} == shared == {k: base.args[k] for k in shared}
    no_min = baseline_url_probe(study, UrlProbeBaselineConfig(name="standard", min_lr_rate=None), seed=0)
    assert "lr_scheduler_type" not in no_min.args


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_replication_end_to_end(tiny_study, tmp_path):
    study = {k: v for k, v in vars(tiny_study()).items() if k not in ("output_dir", "arms", "baseline")}
    config = ReplicationConfig(
        method="meco", title="MeCo tiny", paper={"figure": "56.7 vs 55.7"},
        study=json.loads(json.dumps(study)), options={"pilot": "tiny pilot"},
        output_dir=str(tmp_path / "out"), results=str(tmp_path / "results.md"), cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    record = run_replication(config)
    rows = record["section"]["rows"]
    arms = [r["arm"] for r in rows]
    assert arms == ["standard", "meco", "meco_no_cooldown", "meco", "meco_no_cooldown", "meco vs meco_no_cooldown", "meco"]
    assert all(r["interval"].startswith("[") for r in rows)
    body = record["section"]["body"]
    assert "| meco_no_cooldown |" in body and "tiny pilot" in body
    results = json.loads((tmp_path / "out" / "meco" / "compare" / "results.json").read_text())
    tokens = {r["update_tokens"] for arm in results["arms"].values() for r in arm["runs"]}
    assert tokens == {4 * 4 * 32}
    for arm in results["arms"].values():
        for run in arm["runs"]:
            assert {"heldout_bpb", "heldout_bpb_own_url", "heldout_bpb_other_source_url", "heldout_bpb_unseen_url"} <= set(run["metrics"])
