"""``hf-select reference-losses``: resume after a kill, no files next to the input, no text dropped."""

import json

import pytest
import torch
from datasets import Dataset, load_from_disk

import hf_select.slm.reference_losses as reference_losses
from hf_select.cli import main
from hf_select.slm.jobs import training_rows
from hf_select.testing import TINY_CORPUS, tiny_model, tiny_tokenizer

_ORIGINAL = reference_losses.reference_batch


@pytest.fixture
def world(tmp_path):
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    sentences = [s.strip() + "." for s in TINY_CORPUS.split(".") if s.strip()]
    data = tmp_path / "docs"
    Dataset.from_dict({"text": sentences * 2 + [" ".join(sentences)]}).save_to_disk(str(data))
    return tmp_path, model_dir, data


def _args(model_dir, data, out, *extra):
    return [
        "reference-losses", "--model_name_or_path", str(model_dir), "--dataset_name_or_path", str(data),
        "--seq_length", "24", "--part_size", "4", "--batch_size", "2", "--output_dir", str(out), *extra,
    ]  # fmt: skip


class _Counting:
    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after
        self.inner = _ORIGINAL

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("killed")
        return self.inner(*args, **kwargs)


def test_resume_after_a_kill_equals_a_clean_run_and_writes_nothing_next_to_the_input(world, monkeypatch):
    tmp, model_dir, data = world
    before = sorted(p.name for p in data.iterdir())
    assert main(_args(model_dir, data, tmp / "clean")) == 0
    crashing = _Counting(fail_after=5)
    monkeypatch.setattr(reference_losses, "reference_batch", crashing)
    with pytest.raises(RuntimeError, match="killed"):
        main(_args(model_dir, data, tmp / "run"))
    finished = len(list((tmp / "run" / "parts").glob("part-*.done")))
    assert finished == 2  # two parts of 4 rows (2 batches each) were finished before the kill
    resumed = _Counting()
    monkeypatch.setattr(reference_losses, "reference_batch", resumed)
    assert main(_args(model_dir, data, tmp / "run")) == 0
    clean, run = load_from_disk(str(tmp / "clean")), load_from_disk(str(tmp / "run"))
    assert resumed.calls == -(-(len(run) - 8) // 2)  # only the rows of the unfinished parts were scored
    assert clean.to_dict() == run.to_dict()
    assert not (tmp / "run" / "parts").exists()
    assert sorted(p.name for p in data.iterdir()) == before  # no cache or temp file in the input folder


def test_a_reference_changed_in_place_is_not_mixed_with_old_parts(world, monkeypatch):
    tmp, model_dir, data = world
    monkeypatch.setattr(reference_losses, "reference_batch", _Counting(fail_after=3))
    with pytest.raises(RuntimeError, match="killed"):
        main(_args(model_dir, data, tmp / "run"))
    monkeypatch.undo()
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)
    model.save_pretrained(model_dir)  # same path, other weights
    with pytest.raises(ValueError, match="another run"):
        main([*_args(model_dir, data, tmp / "run"), "--debug"])


@pytest.mark.parametrize("overflow, kept", [("split", "all"), ("truncate", "some")])
def test_long_documents_are_split_into_further_rows_by_default(overflow, kept):
    tokenizer = tiny_tokenizer()
    docs = Dataset.from_dict({"text": [TINY_CORPUS, "short one."]})
    rows = training_rows(docs, tokenizer, "text", 16, overflow=overflow)
    n_tokens = sum(len(x) + 2 for x in tokenizer(list(docs["text"]), add_special_tokens=False).input_ids)
    assert n_tokens > 40  # the first document is several rows long
    total = sum(map(len, rows["input_ids"]))
    assert (total == n_tokens) if kept == "all" else (total < n_tokens)
    assert all(len(r) <= 16 for r in rows["input_ids"])


def test_cross_tokenizer_reference_losses_keep_long_documents(world, tmp_path):
    tmp, model_dir, data = world
    student = tmp_path / "student"
    tiny_tokenizer(vocab_size=280).save_pretrained(student)
    out = tmp / "cross"
    assert main(_args(model_dir, data, out, "--student_tokenizer", str(student))) == 0
    rows = load_from_disk(str(out))
    texts = list(load_from_disk(str(data))["text"])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(student)
    longest = max(len(x) for x in tok(texts, add_special_tokens=False).input_ids)
    assert longest > 24  # the long document did not fit in one row
    trained = sum(sum(x != -100 for x in r) for r in rows["labels"])
    n_words = sum(len(x) for x in tok(texts, add_special_tokens=False).input_ids)
    assert trained >= 0.9 * n_words  # before: everything past seq_length was dropped
    assert all(len(a) == len(b) for a, b in zip(rows["ref_loss"], rows["input_ids"]))
    assert json.dumps(rows[0]["ref_loss"])  # plain floats


def test_a_resume_with_another_part_size_is_refused(world, monkeypatch, capsys):
    tmp, model_dir, data = world
    monkeypatch.setattr(reference_losses, "reference_batch", _Counting(fail_after=3))
    with pytest.raises(RuntimeError, match="killed"):
        main(_args(model_dir, data, tmp / "run"))
    monkeypatch.undo()
    argv = [*_args(model_dir, data, tmp / "run"), "--part_size", "3"]  # the last --part_size wins
    assert main(argv) == 2
    assert "written with part_size 4, this run uses 3" in capsys.readouterr().err
    assert main(_args(model_dir, data, tmp / "run")) == 0  # the original part size resumes
