"""Data Whisperer jobs (arXiv 2505.12212): the options and the one library call behind ``hf-select score
data-whisperer`` (:func:`score_to_disk`) and ``hf-select finetune`` (:func:`finetune_job`).

:func:`score_to_disk` writes the scored dataset (``save_to_disk``) and ``selection.json`` (top-fraction indices,
selection wall-clock, counters, fingerprint); finished groups are persisted under ``<output_dir>/dw_state``, so a
killed run resumes where it stopped. Scores served from the ``datasets`` cache are reported as cached, with no
selection wall-clock (STR is never computed from a cache hit). :func:`finetune_job` reads both.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..loading import DatasetSourceArguments, ModelArguments, load_any_dataset
from .config import DataWhispererConfig
from .finetune import FinetuneArguments


@dataclass
class DataWhispererArguments(DatasetSourceArguments):
    """What to score (``--dataset_name_or_path``, ``--dataset_config``, ``--split``) and where to write it (the
    scoring parameters are :class:`DataWhispererConfig`)."""

    dataset_name_or_path: str = field(
        default=None,
        metadata={"help": "Hub id, save_to_disk folder or json/jsonl/parquet/csv file.", "aliases": ["--dataset_name"]},
    )
    split: str = field(default="train", metadata={"help": "Split to score.", "aliases": ["--dataset_split"]})
    output_dir: str = field(default="dw_scores", metadata={"help": "Where the scored dataset is written."})
    score_column: str = field(default="dw_score", metadata={"help": "Name of the added score column."})
    max_examples: int | None = field(default=None, metadata={"help": "Score only the first N examples."})
    select_fraction: float = field(default=0.1, metadata={"help": "Fraction recorded in selection.json."})
    device: str | None = field(default=None, metadata={"help": "Device for the scoring model (cpu, cuda)."})
    resume: bool = field(
        default=True,
        metadata={"help": "Persist finished groups under output_dir/dw_state and resume from them."},
    )


def score_to_disk(model_args: ModelArguments, args: DataWhispererArguments, config: DataWhispererConfig) -> str:
    """Score ``args``'s dataset with Data Whisperer and write it with ``selection.json`` to ``args.output_dir``;
    returns a one-line summary."""
    from ..loading import load_model_and_tokenizer, require_columns
    from ..selection import top_fraction_indices
    from .scorer import DataWhisperer

    if not args.dataset_name_or_path:
        raise ValueError("--dataset_name_or_path is required")
    dataset = args.load_dataset()
    require_columns(dataset, [config.question_column, config.answer_column], "dataset to score")
    if args.max_examples is not None:
        dataset = dataset.select(range(min(args.max_examples, len(dataset))))
    model, tokenizer = load_model_and_tokenizer(model_args, device=args.device)
    out = Path(args.output_dir)
    whisperer = DataWhisperer(model, tokenizer, config, state_dir=out / "dw_state" if args.resume else None)
    start = time.perf_counter()
    scored = whisperer.add_scores(dataset, args.score_column)
    seconds = time.perf_counter() - start
    cached = bool(whisperer.cached)
    # a cache hit ran no scoring: its wall-clock is not a selection time; resumed groups add their earlier time
    selection_seconds = None if cached else seconds + whisperer.resumed_seconds
    scored.save_to_disk(str(out / "dataset"))
    selected = top_fraction_indices(scored[args.score_column], args.select_fraction)
    summary = {
        "selection_seconds": selection_seconds,
        "cached": cached,
        "fingerprint": whisperer.fingerprint(dataset),
        "selected_indices": selected.tolist(),
        "stats": None if cached else whisperer.stats,
        "attn_layer": whisperer.attn_layer,
        "model": model_args.model_name_or_path,
        "params": asdict(args),
        "config": asdict(config),
    }
    (out / "selection.json").write_text(json.dumps(summary, indent=2))
    if cached:
        return (
            f"scores of {len(scored)} examples loaded from the datasets cache (no scoring ran; no selection "
            f"wall-clock is recorded, so STR cannot be computed from this run); top {args.select_fraction:.0%} = "
            f"{len(selected)} examples -> {out}"
        )
    return (
        f"scored {len(scored)} examples in {selection_seconds:.1f}s ({whisperer.stats}); "
        f"top {args.select_fraction:.0%} = {len(selected)} examples -> {out}"
    )


@dataclass
class FinetuneDataArguments(DatasetSourceArguments):
    """Which data to fine-tune on (``--dataset_name_or_path``, ``--dataset_config``, ``--split``) and what to
    compare."""

    dataset_name_or_path: str = field(
        default=None,
        metadata={
            "help": "Scored training data: a folder written by 'score data-whisperer' or any dataset.",
            "aliases": ["--dataset_name"],
        },
    )
    split: str = field(default="train", metadata={"help": "Training split.", "aliases": ["--dataset_split"]})
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


def _load(path: str, split: str, config: str | None = None):
    folder = Path(path)
    if (folder / "selection.json").exists() and (folder / "dataset").exists():
        return load_any_dataset(str(folder / "dataset"), split), json.loads(
            (folder / "selection.json").read_text()
        )
    return load_any_dataset(path, split, config), None


def finetune_job(model_args: ModelArguments, data: FinetuneDataArguments, args: FinetuneArguments) -> str:
    """Fine-tune on the top ``data.fraction`` of the scored data; with ``data.compare`` also on a random subset
    of the same size and on everything, evaluated on the held-out split (``comparison.json``). Returns the summary
    to print."""
    from ..loading import load_causal_lm, load_model_and_tokenizer
    from ..selection import top_fraction_indices
    from .finetune import compare_subsets, finetune, format_comparison

    if not data.dataset_name_or_path:
        raise ValueError("--dataset_name_or_path is required")
    train, selection = _load(data.dataset_name_or_path, data.split, data.dataset_config)
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
        return f"fine-tuned on {len(selected)} examples in {seconds:.1f}s -> {args.output_dir}"
    if data.heldout_name_or_path is None and selection is not None:
        raise ValueError("--heldout_name_or_path is required: a scored folder holds only the training split")
    heldout_source = data.heldout_name_or_path or data.dataset_name_or_path
    heldout, _ = _load(heldout_source, data.heldout_split, None if data.heldout_name_or_path else data.dataset_config)
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
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "comparison.json").write_text(json.dumps(results, indent=2))
    summary = format_comparison(results)
    if selection and selection.get("cached"):
        summary = (
            "STR not computed: the selection's scores came from the datasets cache (no selection wall-clock)\n"
            + summary
        )
    return summary
