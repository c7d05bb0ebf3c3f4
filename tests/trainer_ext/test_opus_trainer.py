import pytest
import torch
from datasets import Dataset

from hf_select.opus.alignment import OptimizerStateError
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


def test_each_gradient_accumulation_micro_batch_gets_its_own_random_stream(tmp_path):
    """Proxy rows and windows are drawn afresh per micro-batch of a step."""
    model = tiny_model("llama").train()
    proxy = Dataset.from_dict({k: v for k, v in _rows(16, length=32, seed=8).items() if k != "domain"})
    trainer = OPUSTrainer(
        model=model,
        args=_args(tmp_path, max_steps=1, gradient_accumulation_steps=2, score_window=8),
        train_dataset=_train_data(),
        proxy_dataset=proxy,
    )
    seen = []
    original = trainer._joint_batch

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out[0][trainer.args.candidates_per_device :].clone())  # the proxy part of the joint batch
        return out

    trainer._joint_batch = spy
    trainer.train()
    assert len(seen) == 2 and trainer.state.global_step == 1
    assert not torch.equal(seen[0], seen[1])


def test_every_training_forward_runs_without_kv_cache_whatever_the_collator(tmp_path):
    model = tiny_model("llama").train()
    model.config.use_cache = True
    calls = []
    model.register_forward_pre_hook(lambda _m, _a, kw: calls.append(kw.get("use_cache")), with_kwargs=True)

    def plain_collator(features):  # a user collator that says nothing about use_cache
        keys = ("input_ids", "labels", "position_ids")
        return {k: torch.tensor([f[k] for f in features]) for k in keys}

    proxy = Dataset.from_dict({k: v for k, v in _rows(2, seed=5).items() if k != "domain"})
    trainer = OPUSTrainer(
        model=model,
        args=_args(tmp_path, max_steps=1),
        train_dataset=_train_data(),
        proxy_dataset=proxy,
        data_collator=plain_collator,
    )
    trainer.train()
    assert calls and all(c is False for c in calls), calls


@pytest.mark.parametrize("selection", ["topk", "greedy"])
def test_deterministic_selections_train(tmp_path, selection):
    model = tiny_model("llama").train()
    proxy = Dataset.from_dict({k: v for k, v in _rows(3, seed=1).items() if k != "domain"})
    args = _args(tmp_path, selection=selection, max_steps=2)
    trainer = OPUSTrainer(model=model, args=args, train_dataset=_train_data(), proxy_dataset=proxy)
    trainer.train()
    assert all(len(set(r["selected"])) == 2 for r in trainer.opus_history)
    with pytest.raises(ValueError, match="selection"):
        _args(tmp_path, selection="softmax")
    with pytest.raises(ValueError, match="conflicts"):
        _args(tmp_path, selection="topk", greedy=True)


def test_opus_trainer_scores_fused_moe_experts(tmp_path):
    import transformers

    from hf_select.testing import tiny_config

    config = transformers.AutoConfig.for_model(
        "qwen3_moe",
        **{k: v for k, v in tiny_config("llama").to_dict().items() if k in ("vocab_size", "hidden_size")},
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).train()
    proxy = Dataset.from_dict({k: v for k, v in _rows(3, seed=1).items() if k != "domain"})
    trainer = OPUSTrainer(model=model, args=_args(tmp_path), train_dataset=_train_data(), proxy_dataset=proxy)
    before = model.model.layers[0].mlp.experts.gate_up_proj.detach().clone()
    trainer.train()
    experts = [lay for lay in trainer._opus_layers if lay.num_experts]
    assert len(experts) == 4 and all(lay.name in trainer._opus_sketches for lay in experts)
    assert len(trainer.opus_history) == 3
    assert all(torch.isfinite(torch.tensor(r["alignment"])).all() for r in trainer.opus_history)
    assert not torch.equal(before, model.model.layers[0].mlp.experts.gate_up_proj)


def test_opus_trainer_under_muon_in_float64(tmp_path):
    model = tiny_model("llama").double().train()
    weights = [p for n, p in model.named_parameters() if p.ndim == 2 and ".layers." in n]
    muon = torch.optim.Muon(weights, lr=0.02)
    proxy = Dataset.from_dict({k: v for k, v in _rows(3, seed=1).items() if k != "domain"})
    trainer = OPUSTrainer(
        model=model,
        args=_args(tmp_path, standardize=False),
        train_dataset=_train_data(),
        proxy_dataset=proxy,
        optimizers=(muon, None),
    )
    trainer.train()
    assert trainer._opus_kind == "muon" and len(trainer.opus_history) == 3
    assert all(torch.isfinite(torch.tensor(r["alignment"])).all() for r in trainer.opus_history)


def test_logged_domain_shares_are_the_selected_and_offered_shares_of_the_logged_steps(tmp_path):
    from collections import Counter

    model = tiny_model("llama").train()
    proxy = Dataset.from_dict({k: v for k, v in _rows(3, seed=1).items() if k != "domain"})
    trainer = OPUSTrainer(
        model=model, args=_args(tmp_path, max_steps=4, logging_steps=2, selection="topk"),
        train_dataset=_train_data(), proxy_dataset=proxy,
    )  # fmt: skip
    trainer.train()
    logged = [h for h in trainer.state.log_history if "opus_ess" in h]
    assert [h["step"] for h in logged] == [2, 4]
    for entry in logged:
        records = [r for r in trainer.opus_history if entry["step"] - 2 <= r["step"] < entry["step"]]
        chosen = Counter(d for r in records for d in r["selected_domains"])
        offered = Counter(d for r in records for d in r["candidate_domains"])
        for domain in ("good", "noise"):  # a domain offered but never picked is logged as 0
            assert entry[f"opus_share_{domain}"] == round(chosen[domain] / sum(chosen.values()), 4)
            assert entry[f"opus_offered_{domain}"] == round(offered[domain] / sum(offered.values()), 4)
