"""Contract table over the scorers: every config field changes the fingerprint, ``Dataset.map`` equals
``IterableDataset.map``, and the model's train/eval mode is restored. (Data Whisperer's fingerprint contract is
``test_config_is_the_single_source_and_every_field_changes_the_fingerprint`` in its own tests.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from datasets import Dataset

from hf_select.attention_influence import AttentionInfluence, AttentionInfluenceConfig
from hf_select.testing import TINY_CORPUS, tiny_model, tiny_tokenizer

TEXTS = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()][:6]
OTHER_VALUE = {
    "heads": [(0, 1)],
    "max_length": 16,
    "batch_size": 3,
    "text_column": "body",
    "reuse_lower_layers": False,
    "min_tokens": 3,
    "heads_file": "other heads",  # written by the test: a RetrievalHeads JSON selecting (0, 1)
    "prefilter": "repetition",
    "prefilter_options": '{"dup_line_frac": 0.5}',  # with prefilter repetition, against repetition alone
    "add_bos": True,
}


def _scorer(model=None, **overrides):
    config = AttentionInfluenceConfig(**{"heads": [(1, 0)], "max_length": 32, **overrides})
    return AttentionInfluence(model or tiny_model("llama"), tiny_tokenizer(), config=config)


def test_every_attention_influence_field_changes_the_fingerprint(tmp_path):
    import torch

    from hf_select.attention_influence import RetrievalHeads

    data = Dataset.from_dict({"text": TEXTS})
    model = tiny_model("llama")
    base = _scorer(model).fingerprint(data)
    names = [f.name for f in dataclasses.fields(AttentionInfluenceConfig)]
    assert set(names) == set(OTHER_VALUE), "a new config field needs a row in OTHER_VALUE"
    scores = torch.zeros(2, 4)
    scores[0, 1] = 1.0
    heads_file = RetrievalHeads.from_scores(scores, top_fraction=0.125).save(tmp_path / "heads.json")
    for name in names:
        override = {name: OTHER_VALUE[name]}
        if name == "heads_file":  # heads given by a file (heads empty): the file's heads count
            override = {"heads": [], "heads_file": str(heads_file)}
        reference = base
        if name == "prefilter_options":  # options need a prefilter: compare with that prefilter alone
            override = {"prefilter": "repetition", name: OTHER_VALUE[name]}
            reference = _scorer(model, prefilter="repetition").fingerprint(data)
        assert _scorer(model, **override).fingerprint(data) != reference, name


def test_map_equals_iterable_map():
    data = Dataset.from_dict({"text": TEXTS})
    scorer = _scorer()
    mapped = data.map(scorer, batched=True, batch_size=4)
    streamed = list(data.to_iterable_dataset().map(scorer, batched=True, batch_size=4))
    assert len(streamed) == len(mapped)
    np.testing.assert_allclose([r["ai_score"] for r in streamed], mapped["ai_score"], rtol=0, atol=1e-6)
    assert [r["ai_num_tokens"] for r in streamed] == mapped["ai_num_tokens"]


@pytest.mark.parametrize("training", [True, False])
def test_the_model_mode_is_restored(training):
    model = tiny_model("llama").train(training)
    _scorer(model)({"text": TEXTS[:2]})
    assert model.training is training
