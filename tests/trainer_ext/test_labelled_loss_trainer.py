import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from hf_select.packing import PackedCollator
from hf_select.testing import TINY_VOCAB, tiny_model
from hf_select.trainer_ext import LabelledLossTrainer


def rows(n=8, length=12):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        ids = torch.randint(4, TINY_VOCAB, (length - i % 3,), generator=g).tolist()
        labels = [-100] * (3 + i % 4) + ids[3 + i % 4 :]  # a masked prompt of varying length
        out.append({"input_ids": ids, "labels": labels, "position_ids": list(range(len(ids)))})
    return Dataset.from_list(out)


def train(trainer_class, tmp_path, accumulation):
    model = tiny_model("llama").train()
    args = TrainingArguments(
        output_dir=str(tmp_path / f"{trainer_class.__name__}{accumulation}"),
        per_device_train_batch_size=4 // accumulation,
        gradient_accumulation_steps=accumulation,
        max_steps=2,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        remove_unused_columns=False,
        seed=0,
        disable_tqdm=True,
    )
    trainer = trainer_class(model=model, args=args, train_dataset=rows(), data_collator=PackedCollator(0))
    trainer.train()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("accumulation", [1, 2])
def test_updates_equal_the_stock_trainer(tmp_path, accumulation):
    ours = train(LabelledLossTrainer, tmp_path, accumulation)
    stock = train(Trainer, tmp_path, accumulation)
    assert ours.keys() == stock.keys()
    initial = tiny_model("llama").state_dict()
    assert any(not torch.equal(ours[k], initial[k]) for k in ours)  # it trained
    for key in ours:
        torch.testing.assert_close(ours[key], stock[key], atol=1e-5, rtol=1e-4)
