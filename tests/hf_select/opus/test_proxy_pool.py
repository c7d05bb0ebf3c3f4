import json

import numpy as np
import pytest
import yaml
from datasets import Dataset

from hf_select.opus.proxy_pool import benchmark_proxy_texts, build_proxy_pool, lexical_similarity

CORPUS = [
    "The mitochondria is the powerhouse of the cell and makes energy.",
    "def add(a, b): return a + b",
    "Photosynthesis in plants turns light into chemical energy in the cell.",
    "The stock market fell sharply on Tuesday.",
]


def test_lexical_similarity_ranks_the_topical_documents_first():
    targets = ["Question: Which part of the cell makes energy? Answer: the mitochondria"]
    sims = lexical_similarity(CORPUS, targets, num_features=4096)
    assert int(np.argmax(sims)) == 0 and sims[2] > sims[3] and sims[2] > sims[1]
    same = lexical_similarity(["a b c"], ["a b c"], num_features=1024)
    assert same[0] == pytest.approx(1.0, abs=1e-5)


def test_build_proxy_pool_dataset_and_list_and_embedding_fn():
    targets = ["cell energy mitochondria"]
    pool = build_proxy_pool(Dataset.from_dict({"text": CORPUS}), targets, size=2)
    assert pool["text"][0] == CORPUS[0] and len(pool) == 2 and "proxy_similarity" in pool.column_names
    order, sims = build_proxy_pool(CORPUS, targets, size=0.5)
    assert list(order) == [0, 2] and sims[0] >= sims[1]
    onehot = lambda texts: np.array([[1.0, 0.0] if "stock" in t else [0.0, 1.0] for t in texts])  # noqa: E731
    order, _ = build_proxy_pool(CORPUS, ["stock prices"], size=1, embed_fn=onehot)
    assert list(order) == [3]
    with pytest.raises(ValueError, match="targets is empty"):
        build_proxy_pool(CORPUS, [], size=1)


def test_benchmark_proxy_texts_never_reads_the_evaluated_split(tmp_path):
    rec = lambda q: {"query": q, "choices": ["x", "y"], "gold": 1}  # noqa: E731
    (tmp_path / "t.train.jsonl").write_text(json.dumps(rec("train question")) + "\n")
    (tmp_path / "t.test.jsonl").write_text(json.dumps(rec("TEST question")) + "\n")
    task = {
        "name": "t",
        "type": "multiple_choice",
        "split": "test",
        "data_files": {"train": "t.train.jsonl", "test": "t.test.jsonl"},
    }
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(task))
    texts = benchmark_proxy_texts([tmp_path / "t.yaml"], splits=("train", "test"))
    assert texts == ["train question y"]


def test_a_dev_entry_pointing_at_the_test_file_is_refused(tmp_path):
    rec = {"query": "TEST question", "choices": ["x", "y"], "gold": 1}
    (tmp_path / "t.test.jsonl").write_text(json.dumps(rec) + "\n")
    task = {
        "name": "t",
        "type": "multiple_choice",
        "split": "test",
        "data_files": {"dev": "./t.test.jsonl", "test": "t.test.jsonl"},
    }
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(task))
    with pytest.raises(ValueError, match="'dev' split of task t points at .*t.test.jsonl"):
        benchmark_proxy_texts([tmp_path / "t.yaml"])
    with pytest.raises(ValueError, match="not train/dev splits"):
        benchmark_proxy_texts([tmp_path / "t.yaml"], splits=("holdout",))
