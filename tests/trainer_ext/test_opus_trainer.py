import pytest
import torch
from datasets import Dataset

from hf_select.opus.utility import OptimizerStateError
from hf_select.testing import tiny_model
from hf_select.trainer_ext import OPUSConfig, OPUSTrainer


def _rows(n, length=16, seed=0, domain="a"):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 300, (n, length), generator=gen).tolist()
    return {
        "input_ids": ids,
        "labels": [[-100, *r[1:]] for r in ids],
        "position_ids": [list(range(length))] * n,
        "domain": [domain] * n,
    }


def _args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=3,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        remove_unused_columns=False,
        score_window=8,
        proxy_batch_size=2,
        sketch_dim=512,
        disable_tqdm=True,
    )
    base.update(kw)
    return OPUSConfig(**base)


def _train_data():
    a, b = _rows(8, seed=1, domain="good"), _rows(8, seed=2, domain="noise")
    return Dataset.from_dict({k: a[k] + b[k] for k in a})


def test_config_help_on_every_field_and_bad_values(tmp_path):
    from dataclasses import fields

    from transformers import TrainingArguments

    own = [f for f in fields(OPUSConfig) if f.name not in {g.name for g in fields(TrainingArguments)}]
    assert {
        "buffer_factor",
        "select_ratio",
        "temperature",
        "standardize",
        "redundancy_weight",
        "sketch_dim",
        "score_window",
        "proxy_batch_size",
        "preconditioner",
        "greedy",
    } <= {f.name for f in own}
    assert all(f.metadata.get("help") for f in own)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="select_ratio"):
            _args(tmp_path, select_ratio=bad)
    with pytest.raises(ValueError, match="preconditioner"):
        _args(tmp_path, preconditioner="lion")
    assert _args(tmp_path, select_ratio=0.25).candidates_per_device == 8
    assert _args(tmp_path).candidates_per_device == 4


def test_opus_trainer_trains_on_selected_rows_and_logs(tmp_path):
    model = tiny_model("llama").train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    proxy = Dataset.from_dict({k: v for k, v in _rows(3, seed=1).items() if k != "domain"})
    trainer = OPUSTrainer(model=model, args=_args(tmp_path), train_dataset=_train_data(), proxy_dataset=proxy)
    trainer.train()
    assert len(trainer.opus_history) == 3
    assert all(len(r["selected"]) == 2 and len(set(r["selected"])) == 2 for r in trainer.opus_history)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    logged = [h for h in trainer.state.log_history if "opus_ess" in h]
    assert logged and all(1.0 <= h["opus_ess"] <= 4.0 for h in logged)
    assert any(k.startswith("opus_share_") for h in logged for k in h)
    assert set(trainer.opus_timings) == {"scoring_forward_backward", "sketch_and_inner_products", "selection"}


def test_empty_proxy_set_is_refused(tmp_path):
    empty = Dataset.from_dict({"input_ids": []})
    with pytest.raises(ValueError, match="proxy"):
        OPUSTrainer(
            model=tiny_model("llama"), args=_args(tmp_path), train_dataset=_train_data(), proxy_dataset=empty
        )


def test_optimizer_without_adam_state_is_refused(tmp_path):
    model = tiny_model("llama").train()
    sgd = torch.optim.SGD(model.parameters(), lr=0.01)
    proxy = Dataset.from_dict({k: v for k, v in _rows(2).items() if k != "domain"})
    trainer = OPUSTrainer(
        model=model,
        args=_args(tmp_path, preconditioner="adamw"),
        train_dataset=_train_data(),
        proxy_dataset=proxy,
        optimizers=(sgd, None),
    )
    with pytest.raises(OptimizerStateError, match="exp_avg_sq"):
        trainer.train()


def test_opus_select_restores_train_mode_and_leaves_grads_untouched(tmp_path):
    model = tiny_model("llama").train()
    model.gradient_checkpointing_enable()
    proxy = Dataset.from_dict({k: v for k, v in _rows(2, seed=5).items() if k != "domain"})
    trainer = OPUSTrainer(
        model=model,
        args=_args(tmp_path, greedy=True, sketch_dim=None),
        train_dataset=_train_data(),
        proxy_dataset=proxy,
    )
    trainer.create_optimizer()
    batch = trainer.data_collator([_train_data()[i] for i in range(4)])
    kept = trainer.opus_select(dict(batch))
    assert model.training and all(p.grad is None for p in model.parameters())
    assert kept["input_ids"].shape == (2, 16) and "opus_domain" not in kept
    again = trainer.opus_select(dict(batch))
    assert torch.equal(kept["input_ids"], again["input_ids"])  # greedy + same step: deterministic
