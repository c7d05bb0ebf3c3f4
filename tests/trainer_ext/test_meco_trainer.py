import re

import pytest
import torch
from accelerate import skip_first_batches
from datasets import Dataset
from transformers import get_scheduler

from hf_select.packing import pack_documents
from hf_select.testing import tiny_model, tiny_tokenizer
from hf_select.trainer_ext import MeCoConfig, MeCoTrainer
from hf_select.trainer_ext.meco_trainer import cycled_order, meco_schedule

SEQ = 16


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def rows_pool(low: int, high: int, n_docs: int, seed: int) -> Dataset:
    """Packed rows whose tokens all lie in [low, high): tells the phases apart by token range."""
    g = torch.Generator().manual_seed(seed)
    docs = [torch.randint(low, high, (int(torch.randint(4, 12, (1,), generator=g)),), generator=g).tolist()]
    docs += [torch.randint(low, high, (8,), generator=g).tolist() for _ in range(n_docs)]
    return Dataset.from_dict(pack_documents(docs, SEQ))


CONDITIONED = (10, 150)
COOLDOWN = (160, 300)


def config(tmp_path, **kw) -> MeCoConfig:
    base = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 8,
        "per_device_train_batch_size": 2,
        "cooldown_fraction": 0.25,
        "max_length": SEQ,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    base.update(kw)
    return MeCoConfig(**base)


class RecordingTrainer(MeCoTrainer):
    """Records, per forward pass, the step it belongs to and which pool its tokens came from."""

    def compute_loss(self, model, inputs, *args, **kwargs):
        ids = inputs["input_ids"][inputs["labels"] != -100]
        phase = "cooldown" if bool((ids >= COOLDOWN[0]).all()) else "conditioned"
        assert bool((ids >= COOLDOWN[0]).all()) or bool((ids < COOLDOWN[0]).all()), "a batch mixes the pools"
        self.seen = getattr(self, "seen", []) + [(self.state.global_step, phase, inputs["input_ids"].clone())]
        return super().compute_loss(model, inputs, *args, **kwargs)


def make_trainer(tmp_path, cls=RecordingTrainer, seed=0, **kw):
    return cls(
        tiny_model("llama", seed=seed),
        config(tmp_path, **kw),
        train_dataset=rows_pool(*CONDITIONED, 40, seed=1),
        cooldown_dataset=rows_pool(*COOLDOWN, 40, seed=2),
    )


@pytest.mark.parametrize("accumulation", [1, 2])
def test_switch_at_the_right_step_and_one_continuous_lr_schedule(tmp_path, accumulation):
    trainer = make_trainer(
        tmp_path, max_steps=10, cooldown_fraction=0.3, gradient_accumulation_steps=accumulation
    )
    assert trainer.conditioned_steps == 7
    trainer.train()
    phases = {}
    for step, phase, _ in trainer.seen:
        phases.setdefault(step, set()).add(phase)
    assert phases == {k: {"conditioned" if k < 7 else "cooldown"} for k in range(10)}
    assert len(trainer.seen) == 10 * accumulation
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["meco_cooldown"] for h in logged] == [0.0] * 7 + [1.0] * 3
    # One schedule over all 10 steps: the same curve as an independently built cosine-with-min-lr scheduler.
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    ref = get_scheduler(
        "cosine_with_min_lr",
        opt,
        num_warmup_steps=1,
        num_training_steps=10,
        scheduler_specific_kwargs={"min_lr_rate": 0.1},
    )
    expected = []
    for _ in range(10):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert [h["learning_rate"] for h in logged] == pytest.approx(expected)
    # No restart at the switch (steps 7 -> 8): after the warm-up step the logged rate only goes down.
    lrs = [h["learning_rate"] for h in logged]
    assert all(later < earlier for earlier, later in zip(lrs[1:], lrs[2:])), lrs
    # One optimizer throughout: AdamW's step counter covers both phases.
    state = trainer.optimizer.state[next(iter(trainer.model.parameters()))]
    assert int(state["step"]) == 10 and trainer.state.global_step == 10


def test_resume_before_and_after_the_switch_equals_the_uninterrupted_run(tmp_path):
    # max_steps 8, cooldown 0.5: steps 1-4 conditioned, 5-8 cooldown; checkpoints at 3 (before) and 6 (after).
    full = make_trainer(tmp_path / "full", cooldown_fraction=0.5, save_strategy="steps", save_steps=3)
    full.train()
    final = {k: v.detach().clone() for k, v in full.model.state_dict().items()}
    seen_full = {step: ids for step, _, ids in full.seen}
    for ckpt in (3, 6):
        resumed = make_trainer(tmp_path / f"resume{ckpt}", seed=123, cooldown_fraction=0.5)
        resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "out" / f"checkpoint-{ckpt}"))
        assert [s for s, _, _ in resumed.seen] == list(range(ckpt, 8))  # no step replayed or skipped
        for step, _, ids in resumed.seen:
            assert torch.equal(ids, seen_full[step])  # the data skip lands on the right rows of each phase
        for name, value in resumed.model.state_dict().items():
            torch.testing.assert_close(
                value, final[name], rtol=0, atol=1e-6, msg=f"{name} after resume@{ckpt}"
            )


def test_dataloader_workers_and_batch_skipping_keep_the_schedule(tmp_path):
    trainer = make_trainer(tmp_path, dataloader_num_workers=0)
    plain = [b["input_ids"] for b in trainer.get_train_dataloader()]
    assert len(plain) == 8
    workers = make_trainer(tmp_path, dataloader_num_workers=2)
    loader = workers.get_train_dataloader()
    assert all(torch.equal(a, b["input_ids"]) for a, b in zip(plain, loader, strict=True))
    skipped = [b["input_ids"] for b in skip_first_batches(loader, 6)]  # what a resume at step 6 reads
    assert len(skipped) == 2 and all(torch.equal(a, b) for a, b in zip(plain[6:], skipped))


def test_schedule_cycles_each_pool_in_a_fresh_order_and_is_deterministic():
    order = cycled_order(4, 10, seed=0)
    assert sorted(order[:4]) == [0, 1, 2, 3] and sorted(order[4:8]) == [0, 1, 2, 3]
    assert (order == cycled_order(4, 10, seed=0)).all()
    a, b = rows_pool(*CONDITIONED, 10, 1), rows_pool(*COOLDOWN, 10, 2)
    sched = meco_schedule(a, b, 6, 4, seed=0)
    assert list(sched["meco_cooldown"]) == [0] * 6 + [1] * 4
    assert all(max(r) < COOLDOWN[0] for r in sched["input_ids"][:6])
    assert all(min(r) >= COOLDOWN[0] for r in sched["input_ids"][6:])
    with pytest.raises(ValueError, match="cooldown pool has no rows"):
        meco_schedule(a, b.select([]), 6, 4)


def test_raw_documents_are_split_into_disjoint_conditioned_and_plain_pools(tmp_path):
    tok = tiny_tokenizer()
    docs = Dataset.from_dict(
        {
            "text": [f"The answer is {i}. def add(a, b): return a + b" for i in range(40)],
            "url": [f"https://www.site{i % 3}.com/page{i}" for i in range(40)],
        }
    )
    trainer = MeCoTrainer(
        tiny_model("llama"), config(tmp_path, max_length=64), train_dataset=docs, processing_class=tok
    )
    sched = trainer.train_dataset
    texts = [tok.decode(r) for r in sched["input_ids"]]
    conditioned = [t for t, c in zip(texts, sched["meco_cooldown"]) if c == 0]
    cooldown = [t for t, c in zip(texts, sched["meco_cooldown"]) if c == 1]
    assert len(conditioned) == 6 * 2 and len(cooldown) == 2 * 2
    assert all("URL: www.site" in t for t in conditioned) and not any("URL:" in t for t in cooldown)
    numbers = lambda ts: {int(n) for t in ts for n in re.findall(r"The answer is (\d+)\.", t)}  # noqa: E731
    assert not numbers(conditioned) & numbers(cooldown)  # disjoint pools
    for ids, labels in zip(sched["input_ids"], sched["labels"]):  # metadata never trained
        trained = tok.decode([i for i, lab in zip(ids, labels) if lab != -100])
        assert "URL:" not in trained and "site" not in trained


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_cooldown_fraction_outside_0_1_is_rejected(tmp_path, fraction):
    with pytest.raises(ValueError, match=r"cooldown_fraction must be in \[0, 1\)"):
        config(tmp_path, cooldown_fraction=fraction)


def test_bad_input_gives_clear_errors(tmp_path):
    tok = tiny_tokenizer()
    no_url = Dataset.from_dict({"text": ["a", "b", "c", "d"], "source": ["x"] * 4})
    with pytest.raises(ValueError, match=r"missing column\(s\) \['url'\]"):
        MeCoTrainer(tiny_model(), config(tmp_path), train_dataset=no_url, processing_class=tok)
    empty = Dataset.from_dict({"text": ["a", "b", "c", "d"], "url": ["https://a.org", "", "b.org", "c.org"]})
    with pytest.raises(ValueError, match="empty URL"):
        MeCoTrainer(
            tiny_model(), config(tmp_path, cooldown_fraction=0.0), train_dataset=empty, processing_class=tok
        )
    with pytest.raises(ValueError, match="max_steps"):
        MeCoTrainer(tiny_model(), config(tmp_path, max_steps=-1), train_dataset=no_url, processing_class=tok)
    with pytest.raises(ValueError, match="ignore_data_skip"):
        config(tmp_path, ignore_data_skip=True)
    with pytest.raises(ValueError, match="auto_find_batch_size"):
        config(tmp_path, auto_find_batch_size=True)
    with pytest.raises(ValueError, match="metadata_mode"):
        config(tmp_path, metadata_mode="tld")
    with pytest.raises(TypeError, match="MeCoConfig"):
        MeCoTrainer(tiny_model(), None, train_dataset=no_url)


def test_invalid_metadata_policy_of_the_meco_pool(tmp_path):
    """With invalid_metadata='skip' / 'plain' one empty URL does not abort the MeCo map."""
    from hf_select.trainer_ext.meco_trainer import packed_pool

    tok = tiny_tokenizer()
    docs = Dataset.from_dict({"text": ["a b c", "d e f", "g h i"], "url": ["a.org", "", "b.org"]})
    plain_doc = tok("d e f", add_special_tokens=False).input_ids

    def has_plain_doc(pool):
        rows = [t for row in pool["input_ids"] for t in row]
        return any(rows[i : i + len(plain_doc)] == plain_doc for i in range(len(rows)))

    skipped = packed_pool(docs, tok, config(tmp_path, invalid_metadata="skip", max_length=256), True)
    kept = packed_pool(docs, tok, config(tmp_path, invalid_metadata="plain", max_length=256), True)
    assert not has_plain_doc(skipped) and has_plain_doc(kept)
    with pytest.raises(ValueError, match="row 1, column 'url': empty URL"):
        packed_pool(docs, tok, config(tmp_path, max_length=256), True)
    with pytest.raises(ValueError, match="invalid_metadata must be"):
        config(tmp_path, invalid_metadata="drop")
