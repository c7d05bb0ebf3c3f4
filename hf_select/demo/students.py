"""What the small students of the main job share: data pool, starting model, training arguments and the
held-out measurement.

Every student (baseline, AttentionInfluence mix, SLM, MeCo, OPUS) is trained from scratch once per seed of
:class:`~hf_select.demo.context.StudentSettings`: seed ``s`` gives every method the same initialisation and data
order, so methods compare seed by seed (paired). They all draw from one pool that mixes clean documents of every
domain of the world's corpus with documents of its low-quality pool (:func:`pool_documents`), see rows of the
same length and train for the same steps and update tokens; each is measured by its bits per byte on held-out
clean documents (:func:`heldout_documents`).
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


def _sample(dataset, size: int, seed: int, domain_column: str | None = "domain"):
    import numpy as np
    from datasets import concatenate_datasets

    rng = np.random.default_rng(seed)
    if domain_column is None:
        return dataset.select(
            sorted(rng.choice(len(dataset), min(size, len(dataset)), replace=False).tolist())
        )
    domains = np.array(dataset[domain_column])
    parts = []
    for domain in sorted(set(domains.tolist())):
        rows = np.nonzero(domains == domain)[0]
        parts.append(dataset.select(sorted(rng.choice(rows, min(size, len(rows)), replace=False).tolist())))
    return concatenate_datasets(parts)


def _clip(dataset, max_chars: int, quality: str):
    def clip(batch):
        return {
            "text": [t[:max_chars] for t in batch["text"]],
            "doc_chars": [len(t) for t in batch["text"]],
            "quality": [quality] * len(batch["text"]),
        }

    keep = [c for c in ("text", "domain", "source", "url") if c in dataset.column_names]
    return dataset.select_columns(keep).map(clip, batched=True, desc="clip")


def pool_documents(ctx: DemoContext):
    """The students' training pool: ``pool_documents_per_domain`` clean train documents per domain plus
    ``lowq_documents`` from the low-quality pool (domain ``lowq``), each clipped to ``max_chars`` characters.

    Columns ``text, domain, source, url, quality`` (``clean``/``lowq``) and ``doc_chars`` (the unclipped
    length). Seeded by the run seed only: every student seed sees the same pool.
    """
    from datasets import concatenate_datasets, load_from_disk

    s = ctx.student_settings
    clean = _clip(
        _sample(load_pretrain_split(ctx), s.pool_documents_per_domain, ctx.seed), s.max_chars, "clean"
    )
    parts = [clean]
    lowq_dir = ctx.world_dir / "lowq"
    if lowq_dir.exists() and s.lowq_documents:
        lowq = _clip(
            _sample(load_from_disk(str(lowq_dir)), s.lowq_documents, ctx.seed, None), s.max_chars, "lowq"
        )
        parts.append(lowq.map(lambda _: {"domain": "lowq"}, desc="label"))
    return concatenate_datasets(parts)


def heldout_documents(ctx: DemoContext):
    """Held-out clean documents (clipped like the pool) on which every student's bits per byte are measured."""
    s = ctx.student_settings
    heldout = load_pretrain_split(ctx, "heldout")
    return _clip(_sample(heldout, max(1, s.heldout_documents // 4), ctx.seed + 1), s.max_chars, "clean")


def tokenize_documents(dataset, tokenizer, text_column: str = "text", num_proc: int | None = None):
    """Add ``input_ids`` = BOS + tokens + EOS per document (cached by the datasets fingerprint)."""
    from ..packing import tokenize_documents as encode

    return encode(dataset, tokenizer, text_column, num_proc=num_proc)


def packed_rows(ctx: DemoContext, dataset, max_length: int | None = None, keep: tuple[str, ...] = ()):
    """Document-masked packed rows (``input_ids, labels, position_ids``) of a tokenised dataset."""
    from ..packing import pack_dataset

    return pack_dataset(dataset, max_length or ctx.student_settings.seq_length, keep=keep)


def pool_rows(ctx: DemoContext, tokenizer, documents=None):
    """Packed rows (BOS + document + EOS, document-masked) of the pool, or of ``documents``."""
    return packed_rows(
        ctx, tokenize_documents(pool_documents(ctx) if documents is None else documents, tokenizer)
    )


def student_config(ctx: DemoContext, tokenizer):
    """The students' Llama architecture (RoPE, so the harness can score past ``seq_length``)."""
    from transformers import LlamaConfig

    s = ctx.student_settings
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=s.hidden_size, intermediate_size=4 * s.hidden_size,
        num_hidden_layers=s.num_layers, num_attention_heads=s.num_heads, num_key_value_heads=s.num_heads,
        max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip


def fresh_student(ctx: DemoContext, tokenizer, seed: int):
    """A randomly initialised student; the same ``seed`` gives every method the same initialisation."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(student_config(ctx, tokenizer))


def training_arguments(
    ctx: DemoContext, name: str, seed: int | None = None, **overrides: Any
) -> dict[str, Any]:
    """Keyword arguments for ``TrainingArguments`` (or a subclass) shared by every student."""
    s = ctx.student_settings
    seed = s.seed if seed is None else seed
    kwargs = {
        "output_dir": str(ctx.stage_dir(f"student_{name}") / f"trainer-seed{seed}"),
        "per_device_train_batch_size": s.batch_size,
        "max_steps": s.max_steps,
        "learning_rate": s.learning_rate,
        "warmup_steps": s.warmup_ratio,
        "lr_scheduler_type": "cosine",
        "weight_decay": 0.01,
        "logging_steps": max(1, s.max_steps // 20),
        "save_strategy": "no",
        "report_to": "none",
        "seed": seed,
        "data_seed": seed,
        "use_cpu": ctx.device == "cpu",
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
        "disable_tqdm": True,
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


def heldout_bits_per_byte(model, tokenizer, texts, prefix=None) -> float:
    """Bits per UTF-8 byte of ``texts`` (every token scored, given ``prefix`` when one is given)."""
    from ..meco.conditional import prefixed_text_losses
    from ..token_loss import bits_per_byte

    model.eval()
    out = prefixed_text_losses(model, tokenizer, list(texts), prefix)
    return bits_per_byte(out["nats"], out["num_bytes"])


def mean_and_spread(values) -> dict[str, Any]:
    """Mean, sample standard deviation and the values themselves (rounded for the report)."""
    import statistics

    values = [float(v) for v in values]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(spread, 4),
        "values": [round(v, 4) for v in values],
    }


# two-sided 95% critical values of Student's t by degrees of freedom
_T_CRIT = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}


def paired_verdict(
    method: list[float], baseline: list[float], lower_is_better: bool = True
) -> dict[str, Any]:
    """Compare a method to the baseline seed by seed (same initialisation and data order per seed).

    A paired t-test at the 95% level on the per-seed differences: "better" / "worse" when significant,
    otherwise "no difference detectable at this budget" (also when fewer than 2 seeds ran).
    """
    import math
    import statistics

    diffs = [m - b for m, b in zip(method, baseline)]
    if len(diffs) < 2:
        return {
            "difference": diffs[0] if diffs else None,
            "t": None,
            "verdict": "no difference detectable at this budget",
        }
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    t = math.inf if sd == 0 and mean != 0 else (0.0 if sd == 0 else mean / (sd / math.sqrt(len(diffs))))
    crit = _T_CRIT.get(len(diffs) - 1, 1.96)
    if abs(t) < crit:
        verdict = "no difference detectable at this budget"
    else:
        verdict = "better" if (mean < 0) == lower_is_better else "worse"
    return {"difference": round(mean, 4), "t": None if math.isinf(t) else round(t, 2), "verdict": verdict}


def run_seeds(ctx: DemoContext, name: str, train_one, tokenizer, extra_metrics=None) -> dict[str, Any]:
    """Train the student ``name`` once per seed and measure its held-out clean bits per byte.

    ``train_one(seed) -> (model, info)`` trains one student; ``extra_metrics(model) -> dict`` adds numbers per
    seed. The first seed's model is saved where the evaluation stage finds it. Returns per-seed results and the
    mean and spread of the bits per byte.
    """
    texts = heldout_documents(ctx)["text"]
    per_seed = []
    for i, seed in enumerate(ctx.student_settings.seeds):
        model, info = train_one(seed)
        info = {
            "seed": seed,
            "heldout_bits_per_byte": round(heldout_bits_per_byte(model, tokenizer, texts), 4),
            **info,
        }
        if extra_metrics is not None:
            info.update(extra_metrics(model))
        per_seed.append(info)
        if i == 0:
            save_student(ctx, name, model, tokenizer, extra={"method": name, **info})
    s = ctx.student_settings
    return {
        "student": name,
        "seeds": list(s.seeds),
        "steps": s.max_steps,
        "update_tokens": s.max_steps * s.batch_size * s.seq_length,
        "heldout_documents": len(texts),
        "heldout_bits_per_byte": mean_and_spread([r["heldout_bits_per_byte"] for r in per_seed]),
        "per_seed": per_seed,
    }


def trainer_losses(trainer) -> list[list]:
    """``[[step, loss], ...]`` of the logged training losses: lists, not tuples, so that a stage's result equals
    what a later run reads back from its JSON."""
    return [[h["step"], h["loss"]] for h in trainer.state.log_history if "loss" in h]
