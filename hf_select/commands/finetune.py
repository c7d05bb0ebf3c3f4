"""``hf-select finetune``: fine-tune on the top fraction of a scored dataset (full or LoRA), optionally comparing
with a random subset of the same size and the full set on a held-out split (metric + gold loss, STR)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..data_whisperer.finetune import FinetuneArguments
from ..loading import ModelArguments


@dataclass
class FinetuneDataArguments:
    """Which data to fine-tune on and what to compare."""

    dataset_name_or_path: str = field(
        default=None,
        metadata={"help": "Scored training data: a folder written by 'score data-whisperer' or any dataset."},
    )
    split: str = field(default="train", metadata={"help": "Training split."})
    heldout_name_or_path: str | None = field(
        default=None, metadata={"help": "Held-out data (default: the same source's --heldout_split)."}
    )
    heldout_split: str = field(default="heldout", metadata={"help": "Held-out split."})
    score_column: str | None = field(
        default="dw_score", metadata={"help": "Score column to select by (None: train on everything)."}
    )
    fraction: float = field(default=0.1, metadata={"help": "Fraction of the training set to keep."})
    compare: bool = field(default=True, metadata={"help": "Also train on a random subset and the full set."})
    metric: str = field(
        default="auto", metadata={"help": "Held-out answer metric: auto, exact_match, rouge_l."}
    )
    max_generate: int = field(default=64, metadata={"help": "Held-out examples answered by generation."})
    max_heldout: int | None = field(
        default=None,
        metadata={"help": "Evaluate on the first N held-out examples only (gold loss and metric)."},
    )


CONFIG_CLASSES = (ModelArguments, FinetuneDataArguments, FinetuneArguments)


def _load(path: str, split: str):
    from ..loading import load_any_dataset

    folder = Path(path)
    if (folder / "selection.json").exists() and (folder / "dataset").exists():
        return load_any_dataset(str(folder / "dataset"), split), json.loads(
            (folder / "selection.json").read_text()
        )
    return load_any_dataset(path, split), None


def run(model_args: ModelArguments, data: FinetuneDataArguments, args: FinetuneArguments) -> int:
    from ..data_whisperer.finetune import compare_subsets, finetune, format_comparison
    from ..loading import load_causal_lm, load_model_and_tokenizer
    from ..selection import top_fraction_indices

    if not data.dataset_name_or_path:
        raise ValueError("--dataset_name_or_path is required")
    train, selection = _load(data.dataset_name_or_path, data.split)
    if data.score_column and data.score_column in train.column_names:
        selected = top_fraction_indices(train[data.score_column], data.fraction)
    elif data.score_column:
        raise ValueError(
            f"training data has no score column {data.score_column!r}; its columns: {train.column_names}"
        )
    else:
        selected = list(range(len(train)))
    model, tokenizer = load_model_and_tokenizer(model_args)
    if not data.compare:
        trained, seconds = finetune(model, tokenizer, train.select(list(selected)), args)
        trained.save_pretrained(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
        print(f"fine-tuned on {len(selected)} examples in {seconds:.1f}s -> {args.output_dir}")
        return 0
    if data.heldout_name_or_path is None and selection is not None:
        raise ValueError("--heldout_name_or_path is required: a scored folder holds only the training split")
    heldout, _ = _load(data.heldout_name_or_path or data.dataset_name_or_path, data.heldout_split)
    if data.max_heldout is not None:
        heldout = heldout.select(range(min(data.max_heldout, len(heldout))))

    def fresh():
        return load_causal_lm(
            model_args.model_name_or_path,
            model_args.revision,
            model_args.dtype,
            model_args.attn_implementation,
            gguf_file=model_args.gguf_file,
        )

    results = compare_subsets(
        fresh,
        tokenizer,
        train,
        heldout,
        selected,
        args,
        selection_seconds=selection["selection_seconds"] if selection else None,
        metric=data.metric,
        max_generate=data.max_generate,
    )
    if selection and selection.get("cached"):
        print(
            "STR not computed: the selection's scores came from the datasets cache (no selection wall-clock)"
        )
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "comparison.json").write_text(json.dumps(results, indent=2))
    print(format_comparison(results))
    return 0
