"""SLM checks its inputs before step 1: the whole ref_loss column and the reference's tokenizer."""

import math
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from hf_select.testing import tiny_model, tiny_tokenizer
from hf_select.trainer_ext import SLMConfig, SLMTrainer
from hf_select.trainer_ext.slm_trainer import check_same_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from slm_helpers import packed_rows


def _trainer(rows, tmp_path, **kwargs):
    args = SLMConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1, use_cpu=True,
        report_to="none", save_strategy="no",
    )  # fmt: skip
    return SLMTrainer(model=tiny_model("llama"), args=args, train_dataset=Dataset.from_dict(rows), **kwargs)


def _rows_with_ref(num_rows=40):
    rows = packed_rows(num_rows=num_rows)
    rows["ref_loss"] = [[1.0] * len(r) for r in rows["input_ids"]]
    return rows


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda r: r.__setitem__(37, r[37][:-1]), "dataset row 37 has 15 values for 16 tokens"),
        (lambda r: r[33].__setitem__(5, None), r"dataset row 33 holds an infinite or null value \(None\)"),
        (lambda r: r[38].__setitem__(2, math.inf), r"dataset row 38 holds an infinite or null value \(inf\)"),
        (lambda r: r[21].__setitem__(0, -math.inf), r"dataset row 21 holds an infinite or null value \(-inf\)"),
    ],
)
def test_a_bad_ref_loss_column_fails_before_step_1_naming_the_dataset_row(tmp_path, corrupt, message):
    rows = _rows_with_ref()
    corrupt(rows["ref_loss"])
    with pytest.raises(ValueError, match=message):
        _trainer(rows, tmp_path)


def test_a_good_ref_loss_column_passes(tmp_path):
    _trainer(_rows_with_ref(), tmp_path)
    rows = _rows_with_ref()
    rows["ref_loss"][33][5] = math.nan  # a token without a reference value (never selected)
    _trainer(rows, tmp_path)


def test_an_online_reference_with_another_vocabulary_is_refused(tmp_path):
    rows = packed_rows()
    other = tiny_model("llama", vocab_size=400)
    with pytest.raises(ValueError, match=r"vocabulary \(400\) differs from the student's \(320\)"):
        _trainer(rows, tmp_path, ref_model=other)


def test_reference_and_student_tokenizers_are_compared():
    check_same_tokenizer(tiny_tokenizer(), tiny_tokenizer())
    with pytest.raises(ValueError, match="vocabularies differ.*--student_tokenizer"):
        check_same_tokenizer(tiny_tokenizer(), tiny_tokenizer(vocab_size=280))


def test_an_online_reference_tokenizer_mismatch_is_refused(tmp_path):
    with pytest.raises(ValueError, match="differs from the student's"):
        _trainer(
            packed_rows(), tmp_path, ref_model=tiny_model("llama", seed=1),
            processing_class=tiny_tokenizer(), ref_tokenizer=tiny_tokenizer(vocab_size=280),
        )  # fmt: skip


def test_an_empty_training_set_is_an_error(tmp_path):
    rows = {k: [] for k in packed_rows()}
    with pytest.raises(ValueError, match="training dataset is empty"):
        _trainer(rows, tmp_path)
