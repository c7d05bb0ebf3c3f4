"""The AttentionInfluence replication's measuring pieces against hand values: the per-domain selection, the
selected-vs-rest length ratio and its interval, the App. D check's invariants, and the YAML's settings."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_select.replicate.attention_influence import (
    AttentionInfluenceReplicationOptions,
    length_ratio,
    mean_interval,
    top_fraction_mask,
)

ROOT = Path(__file__).resolve().parents[3]


def test_top_fraction_mask_per_domain_never_takes_nan():
    domains = ["a"] * 5 + ["b"] * 5
    scores = [0.1, 0.9, math.nan, 0.5, 0.3, 2.0, 1.0, None, 3.0, 0.0]
    mask = top_fraction_mask(domains, scores, 0.4)  # round(0.4 x 5) = 2 per domain, NaN counted in n
    assert np.flatnonzero(mask).tolist() == [1, 3, 5, 8]
    # a domain with fewer valid scores than its share selects only those
    assert np.flatnonzero(top_fraction_mask(["a"] * 5, [math.nan] * 4 + [1.0], 0.4)).tolist() == [4]


def test_length_ratio_hand_values_and_interval():
    lengths = [100, 300, 200, 200, 50]
    selected = np.array([True, True, False, False, False])
    eligible = np.array([True, True, True, True, False])  # the last one was filtered: never in "rest"
    out = length_ratio(lengths, selected, eligible, resamples=500)
    assert out["ratio"] == pytest.approx(200 / 200)
    assert out["selected"] == 2 and out["rest"] == 2
    low, high = out["interval"]
    assert low <= out["ratio"] <= high
    # twice as long everywhere: ratio 2 with a degenerate interval
    out = length_ratio([20, 20, 10, 10], np.array([1, 1, 0, 0], bool), np.ones(4, bool), resamples=200)
    assert out["ratio"] == 2 and out["interval"] == pytest.approx([2, 2])
    assert length_ratio([1, 2], np.array([1, 1], bool), np.ones(2, bool))["ratio"] is None  # nothing left


def test_mean_interval_uses_student_t():
    mean, (low, high) = mean_interval([0.0, 1.0])
    assert mean == 0.5
    assert high - mean == pytest.approx(12.706204736 * (math.sqrt(0.5) / math.sqrt(2)), rel=1e-6)
    assert mean_interval([3.0]) == (3.0, None)


def test_masking_check_top_heads_and_distinct_random_heads():
    from hf_select.attention_influence.proxy_accuracy import masking_check
    from hf_select.attention_influence.retrieval_heads import RetrievalHeads
    from hf_select.testing import tiny_model, tiny_tokenizer

    model, tokenizer = tiny_model("llama").eval(), tiny_tokenizer()
    scores = torch.zeros(2, 4)
    scores[1, 0] = 1.0
    heads = RetrievalHeads.from_scores(scores, top_fraction=0.125)
    samples = [{"prompt": "the cat sat on", "answer": " the mat"}] * 2
    check = masking_check(model, tokenizer, samples, heads, random_draws=3, seed=0)
    assert len(check["random_draws"]) == 3
    for draw in check["random_draws"]:
        assert [1, 0] not in draw["heads"] and len(draw["heads"]) == len(heads.selected)
    assert check["random"]["token_accuracy"] == pytest.approx(
        sum(d["token_accuracy"] for d in check["random_draws"]) / 3
    )


def test_yaml_names_known_options_and_a_gpu_profile():
    yaml = pytest.importorskip("yaml")
    from hf_select.replicate import ReplicationConfig

    spec = yaml.safe_load((ROOT / "benchmarks/replications/attention_influence.yaml").read_text())
    for profile in ("cpu", "gpu"):
        config = ReplicationConfig(**spec, profile=profile)
        study, options = config.resolved()
        opts = config.options_object(options)
        assert isinstance(opts, AttentionInfluenceReplicationOptions)
        assert len(study["seeds"]) >= 3 and opts.fraction == 0.2
