"""What the small students of the main job share: data, starting model and training arguments.

Every student (baseline, SLM, MeCo, OPUS) starts from the same random initialisation of the base model's
architecture, sees packed rows of the same length and trains for the same number of steps and tokens, so that
their evaluation compares the data selection and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .context import DemoContext


def load_tokenizer(ctx: DemoContext):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ctx.tokenizer_dir)


def load_pretrain_split(ctx: DemoContext, split: str = "train"):
    """The demo pretraining corpus (``text, domain, source, url, title, license``)."""
    from datasets import load_from_disk

    return load_from_disk(str(ctx.world_dir / "pretrain"))[split]


def tokenize_documents(dataset, tokenizer, text_column: str = "text", num_proc: int | None = None):
    """Add ``input_ids`` = BOS + tokens + EOS per document (cached by the datasets fingerprint)."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def encode(batch):
        ids = tokenizer(batch[text_column], add_special_tokens=False).input_ids
        return {"input_ids": [bos + x + eos for x in ids]}

    return dataset.map(encode, batched=True, num_proc=num_proc, desc="tokenize")


def packed_rows(ctx: DemoContext, dataset, max_length: int | None = None, keep: tuple[str, ...] = ()):
    """Document-masked packed rows (``input_ids, labels, position_ids``) of a tokenised dataset."""
    from ..packing import pack_dataset_batch

    max_length = max_length or ctx.student_settings.seq_length
    drop = [c for c in dataset.column_names if c not in keep]
    return dataset.map(
        pack_dataset_batch,
        batched=True,
        batch_size=1000,
        remove_columns=drop,
        fn_kwargs={"max_length": max_length},
        desc="pack",
    )


def pretrain_rows(ctx: DemoContext, tokenizer):
    """The packed training rows every plain student sees (the train split, BOS + document + EOS)."""
    return packed_rows(ctx, tokenize_documents(load_pretrain_split(ctx, "train"), tokenizer))


def fresh_student(ctx: DemoContext):
    """A randomly initialised model with the base model's architecture (same seed for every student)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(ctx.base_model_dir)
    torch.manual_seed(ctx.student_settings.seed)
    return AutoModelForCausalLM.from_config(config)


def training_arguments(ctx: DemoContext, name: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``TrainingArguments`` (or a subclass) shared by every student."""
    s = ctx.student_settings
    kwargs = {
        "output_dir": str(ctx.stage_dir(f"student_{name}") / "trainer"),
        "per_device_train_batch_size": s.batch_size,
        "max_steps": s.max_steps,
        "learning_rate": s.learning_rate,
        "warmup_steps": s.warmup_ratio,
        "lr_scheduler_type": "cosine",
        "weight_decay": 0.01,
        "logging_steps": max(1, s.max_steps // 20),
        "save_strategy": "no",
        "report_to": "none",
        "seed": s.seed,
        "data_seed": s.seed,
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
        "disable_tqdm": False,
    }
    kwargs.update(overrides)
    return kwargs


def save_student(ctx: DemoContext, name: str, model, tokenizer, extra: dict[str, Any] | None = None) -> Path:
    """Save a trained student where the evaluation stage finds it."""
    import json

    path = ctx.students_dir / name
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "hf_select_student.json").write_text(json.dumps({"name": name, **(extra or {})}, indent=2))
    return path
