"""What the small students of the main job share: the data pool, the held-out documents and the architecture.

The students (baseline, AttentionInfluence mix, random mix, SLM, MeCo, OPUS) are one ``compare`` study
(:mod:`hf_select.demo.stage_students`): seed ``s`` gives every arm the same initial weights and data order where
the mechanism allows, every arm trains the same update tokens. They all draw from one pool that mixes clean
documents of every domain of the world's corpus with documents of its low-quality pool (:func:`pool_documents`)
and are measured by their bits per byte on held-out clean documents (:func:`heldout_documents`).
"""

from __future__ import annotations

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


