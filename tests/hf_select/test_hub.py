import logging

import numpy as np
import pytest
from datasets import Dataset, load_dataset
from figure_checks import is_drawn
from huggingface_hub import DatasetCard, ModelCard

from hf_select.hub import int_scores, push_model, push_scored_dataset


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    return Dataset.from_dict(
        {
            "text": [f"doc {i}" for i in range(60)],
            "domain": ["web", "code", "math"] * 20,
            "ai_score": rng.normal(size=60).tolist(),
        }
    )


def test_int_scores_round_or_quantile_bins():
    assert int_scores(np.array([0.4, 2.6, 4.5, 3.5])).tolist() == [0, 3, 4, 4]  # FineWeb-Edu rounding
    bins = int_scores(np.arange(100.0), bins=10)
    assert bins.min() == 0 and bins.max() == 9 and np.bincount(bins).tolist() == [10] * 10


def test_local_layout_loads_back_with_configs_and_card(tmp_path, scored):
    folder = push_scored_dataset(
        scored,
        local_dir=tmp_path / "hub",
        score_column="ai_score",
        thresholds=[5, 8],
        int_score_bins=10,
        method="attention_influence",
        model_id="org/base",
        model_revision="abc123",
        heads=[[1, 2], [0, 3]],
        params={"top_k": 3},
        max_shard_size=600,
    )
    every = load_dataset(folder, "default", split="train")
    assert len(every) == 60 and set(every.column_names) == {"text", "domain", "score", "int_score"}
    np.testing.assert_allclose(every["score"], scored["ai_score"])
    for threshold, name in ((5, "int_score_ge_5"), (8, "int_score_ge_8")):
        part = load_dataset(folder, name, split="train")
        expected = sorted(t for t, i in zip(every["text"], every["int_score"]) if i >= threshold)
        assert sorted(part["text"]) == expected and min(part["int_score"]) >= threshold
    assert len(list((tmp_path / "hub/data").glob("train-*-of-*.parquet"))) > 1  # sharded
    card = DatasetCard.load(tmp_path / "hub/README.md")
    meta = card.data.to_dict()
    assert [c["config_name"] for c in meta["configs"]] == ["default", "int_score_ge_5", "int_score_ge_8"]
    assert meta["hf_select"]["scoring_model_revision"] == "abc123" and meta["hf_select"]["heads"] == [
        [1, 2],
        [0, 3],
    ]
    assert meta["hf_select"]["rows"]["int_score_ge_8"] == len(
        load_dataset(folder, "int_score_ge_8", split="train")
    )
    assert "score_histogram.png" in card.text and is_drawn(tmp_path / "hub/score_histogram.png")


class FakeApi:
    def __init__(self, failures=1, files=()):
        self.failures, self.commits, self.files, self.operations = failures, [], list(files), []

    def list_repo_files(self, repo_id, repo_type=None):
        return list(self.files)

    def create_repo(self, repo_id, **kwargs):
        self.repo = (repo_id, kwargs)

    def create_commit(self, repo_id, operations, **kwargs):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("flaky network")
        self.commits.append((repo_id, [op.path_in_repo for op in operations], kwargs))
        self.operations.append(operations)
        return type("Info", (), {"commit_url": f"https://hf.co/datasets/{repo_id}/commit/1"})()


def test_push_is_one_commit_with_retry_and_never_logs_the_token(monkeypatch, scored, caplog):
    api = FakeApi(failures=1)
    monkeypatch.setattr("huggingface_hub.HfApi", lambda token=None: api)
    monkeypatch.setattr("hf_select.hub.time.sleep", lambda s: None)
    secret = "hf_SECRETtoken123"
    with caplog.at_level(logging.DEBUG):
        url = push_scored_dataset(
            scored,
            "me/scores",
            token=secret,
            score_column="ai_score",
            thresholds=[1],
            method="attention_influence",
            model_id="org/base",
        )
    assert url.endswith("/commit/1") and len(api.commits) == 1
    repo, paths, kwargs = api.commits[0]
    assert repo == "me/scores" and kwargs["repo_type"] == "dataset"
    assert "README.md" in paths and "score_histogram.png" in paths
    assert any(p.startswith("data/train-") for p in paths) and any(
        p.startswith("int_score_ge_1/") for p in paths
    )
    assert secret not in caplog.text


def test_push_needs_a_token_and_exactly_one_destination(monkeypatch, scored, tmp_path):
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(PermissionError, match="needs a token"):
        push_scored_dataset(scored, "me/scores", score_column="ai_score")
    with pytest.raises(ValueError, match="exactly one of repo_id"):
        push_scored_dataset(scored, "me/scores", local_dir=tmp_path, score_column="ai_score")
    with pytest.raises(ValueError, match="no score column 'score'"):
        push_scored_dataset(scored, local_dir=tmp_path)


def test_push_model_card_records_the_selection(tmp_path):
    from hf_select.testing import tiny_model, tiny_tokenizer

    folder = push_model(
        tiny_model("llama"),
        tiny_tokenizer(),
        local_dir=tmp_path / "m",
        selection={"method": "attention_influence", "dataset": "me/scores", "config": "int_score_ge_8"},
        base_model="org/base",
        eval_table="| task | acc |\n|---|---|\n| arc | 0.5 |\n",
    )
    card = ModelCard.load(tmp_path / "m/README.md")
    assert card.data.to_dict()["hf_select"]["data_selection"]["config"] == "int_score_ge_8"
    assert card.data.base_model == "org/base" and "| arc | 0.5 |" in card.text
    assert (tmp_path / "m/model.safetensors").exists() and (tmp_path / "m/tokenizer.json").exists()
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(folder).config.model_type == "llama"


def test_republishing_locally_gives_exactly_the_new_rows(tmp_path, scored):
    folder = tmp_path / "hub"
    push_scored_dataset(scored, local_dir=folder, score_column="ai_score", thresholds=[0], max_shard_size=300)
    assert len(list((folder / "data").glob("*.parquet"))) > 3
    small = scored.select(range(10))
    push_scored_dataset(small, local_dir=folder, score_column="ai_score", thresholds=[0])
    # no shard of the first publication stays beside the new one
    assert load_dataset(str(folder), "default", split="train")["text"] == small["text"]
    assert len(load_dataset(str(folder), "int_score_ge_0", split="train")) == sum(
        round(x) >= 0 for x in small["ai_score"]
    )


def test_a_hub_push_deletes_old_shards_in_the_same_commit(monkeypatch, scored):
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    old = ["README.md", "data/train-00000-of-00003.parquet", "data/train-00002-of-00003.parquet"]
    old += ["int_score_ge_1/train-00000-of-00001.parquet", "notes.txt"]
    api = FakeApi(failures=0, files=old)
    monkeypatch.setattr("huggingface_hub.HfApi", lambda token=None: api)
    push_scored_dataset(scored, "me/scores", token="t", score_column="ai_score", thresholds=[1])
    (operations,) = api.operations
    deleted = sorted(op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete))
    added = {op.path_in_repo for op in operations if isinstance(op, CommitOperationAdd)}
    assert deleted == ["data/train-00000-of-00003.parquet", "data/train-00002-of-00003.parquet"]
    assert "int_score_ge_1/train-00000-of-00001.parquet" in added and "README.md" in added


def test_the_card_has_license_language_size_and_task_categories(tmp_path, scored):
    licensed = scored.add_column("license", ["odc-by"] * len(scored))
    push_scored_dataset(licensed, local_dir=tmp_path / "a", score_column="ai_score", language=["en"])
    meta = DatasetCard.load(tmp_path / "a/README.md").data.to_dict()
    assert meta["license"] == "odc-by" and meta["language"] == ["en"]
    assert meta["size_categories"] == ["n<1K"] and meta["task_categories"] == ["text-generation"]
    mixed = scored.add_column("license", ["odc-by", "cc-by-4.0"] * (len(scored) // 2))
    push_scored_dataset(mixed, local_dir=tmp_path / "b", score_column="ai_score", license="other")
    assert DatasetCard.load(tmp_path / "b/README.md").data.to_dict()["license"] == "other"
    push_scored_dataset(mixed, local_dir=tmp_path / "c", score_column="ai_score")
    assert "license" not in DatasetCard.load(tmp_path / "c/README.md").data.to_dict()


def test_size_categories_buckets():
    from hf_select.hub import size_category

    assert [size_category(n) for n in (0, 999, 1000, 54_321, 10**6, 2 * 10**12)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M", "n>1T"
    ]  # fmt: skip


def test_heads_given_as_tuples_still_load(tmp_path, scored):
    """``RetrievalHeads.selected`` holds tuples; YAML would write them as ``!!python/tuple`` tags, which make the
    card (and so ``load_dataset``) unreadable."""
    import uuid

    folder = push_scored_dataset(
        scored, local_dir=tmp_path / f"tuples-{uuid.uuid4().hex}", score_column="ai_score",
        method="attention_influence", heads=[(1, 2), (0, 3)],
    )  # fmt: skip
    assert len(load_dataset(folder, split="train")) == len(scored)
    assert DatasetCard.load(f"{folder}/README.md").data.to_dict()["hf_select"]["heads"] == [[1, 2], [0, 3]]
