"""``hf-select detect-heads``: find the retrieval heads of a causal LM (AttentionInfluence, arXiv 2505.07293)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from transformers.utils import logging

from ..loading import ModelArguments, load_any_dataset, load_model_and_tokenizer

logger = logging.get_logger(__name__)


@dataclass
class DetectHeadsArguments:
    """Options of ``hf-select detect-heads``."""

    output_file: str = field(
        default="retrieval_heads.json", metadata={"help": "Where to write the heads (JSON)."}
    )
    heatmap_file: str | None = field(
        default=None, metadata={"help": "Optional PNG heatmap of the head scores."}
    )
    proxy_dataset: str | None = field(
        default=None,
        metadata={"help": "Dataset (id or path) of ready proxy samples: columns prompt, answer, value_span."},
    )
    values_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Dataset (id or path) whose text gives the value sentences of generated proxy samples."
        },
    )
    values_column: str = field(default="text", metadata={"help": "Text column of --values_dataset."})
    split: str = field(default="train", metadata={"help": "Split of the proxy / values dataset."})
    num_samples: int = field(default=800, metadata={"help": "Proxy samples to generate (paper: 800)."})
    context_tokens: int = field(
        default=4096, metadata={"help": "Token budget of prompt + answer (paper: 4096; at most the model's)."}
    )
    top_fraction: float = field(
        default=0.05, metadata={"help": "Share of heads to select (paper: 0.05, the top 5 percent)."}
    )
    method: str = field(
        default="teacher_forced", metadata={"help": "teacher_forced (one pass) or generation (Wu et al.)."}
    )
    keep_failed: bool = field(
        default=False,
        metadata={"help": "Score samples the model fails instead of dropping them (Wu et al. drop)."},
    )
    min_accuracy: float = field(
        default=0.5, metadata={"help": "A sample fails below this answer accuracy / ROUGE-1 recall."}
    )
    key_length: int = field(default=32, metadata={"help": "Characters per random key (paper: 32)."})
    seed: int = field(default=0, metadata={"help": "Seed of the generated proxy samples."})
    device: str | None = field(
        default=None, metadata={"help": "Device (default: cuda if available, else cpu)."}
    )


CONFIG_CLASSES = (ModelArguments, DetectHeadsArguments)


def sentences(texts, limit: int = 50_000) -> list[str]:
    """Sentence-like pieces of ``texts`` (split at sentence ends and line breaks) to use as proxy values."""
    out: list[str] = []
    for text in texts:
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
        if len(out) >= limit:
            break
    return out[:limit]


def run(model_args: ModelArguments, args: DetectHeadsArguments) -> int:
    import torch

    from ..attention_influence.retrieval_heads import detect_retrieval_heads
    from ..loading import check_text_column, require_columns

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model_and_tokenizer(model_args, device=device)
    proxy = values = None
    if args.proxy_dataset:
        proxy = load_any_dataset(args.proxy_dataset, args.split).to_list()
    elif args.values_dataset:
        texts = load_any_dataset(args.values_dataset, args.split)
        require_columns(texts, [args.values_column], "--values_dataset")
        check_text_column(texts, args.values_column, "--values_dataset")
        values = sentences(texts[args.values_column])
    else:
        raise ValueError("give --proxy_dataset (ready samples) or --values_dataset (text for the values)")
    heads = detect_retrieval_heads(
        model,
        tokenizer,
        proxy=proxy,
        values=values,
        top_fraction=args.top_fraction,
        method=args.method,
        drop_failed=not args.keep_failed,
        min_accuracy=args.min_accuracy,
        num_samples=args.num_samples,
        context_tokens=args.context_tokens,
        seed=args.seed,
        key_length=args.key_length,
    )
    heads.model_name = model_args.model_name_or_path
    heads.save(args.output_file)
    if args.heatmap_file:
        heads.plot_heatmap(args.heatmap_file)
    logger.warning(f"{len(heads.selected)} retrieval heads -> {args.output_file}: {heads.selected}")
    return 0
