"""``hf-select score data-whisperer``: add Data Whisperer scores to a question/answer dataset.

Writes the scored dataset (``save_to_disk``) and ``selection.json`` (top-fraction indices, selection wall-clock,
counters, fingerprint) to ``--output_dir``; ``hf-select finetune`` reads both. Every scoring parameter is a
field of :class:`hf_select.data_whisperer.DataWhispererConfig` (parsed here as options). Finished groups are
persisted under ``--output_dir/dw_state``, so a killed run resumes where it stopped. Scores served from the
``datasets`` cache are reported as cached, with no selection wall-clock (STR is never computed from a cache hit).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data_whisperer.scorer import DataWhispererConfig
from ..loading import ModelArguments


@dataclass
class DataWhispererArguments:
    """What to score and where to write it (the scoring parameters are :class:`DataWhispererConfig`)."""

    dataset_name_or_path: str = field(
        default=None, metadata={"help": "Hub id, save_to_disk folder or json/jsonl/parquet/csv file."}
    )
    split: str = field(default="train", metadata={"help": "Split to score."})
    output_dir: str = field(default="dw_scores", metadata={"help": "Where the scored dataset is written."})
    score_column: str = field(default="dw_score", metadata={"help": "Name of the added score column."})
    max_examples: int | None = field(default=None, metadata={"help": "Score only the first N examples."})
    select_fraction: float = field(default=0.1, metadata={"help": "Fraction recorded in selection.json."})
    device: str | None = field(default=None, metadata={"help": "Device for the scoring model (cpu, cuda)."})
    resume: bool = field(
        default=True,
        metadata={"help": "Persist finished groups under output_dir/dw_state and resume from them."},
    )


CONFIG_CLASSES = (ModelArguments, DataWhispererArguments, DataWhispererConfig)


def run(model_args: ModelArguments, args: DataWhispererArguments, config: DataWhispererConfig) -> int:
    from ..data_whisperer.scorer import DataWhisperer
    from ..loading import load_any_dataset, load_model_and_tokenizer, require_columns
    from ..selection import top_fraction_indices

    if not args.dataset_name_or_path:
        raise ValueError("--dataset_name_or_path is required")
    dataset = load_any_dataset(args.dataset_name_or_path, args.split)
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
        print(
            f"scores of {len(scored)} examples loaded from the datasets cache (no scoring ran; no selection "
            f"wall-clock is recorded, so STR cannot be computed from this run); top {args.select_fraction:.0%} = "
            f"{len(selected)} examples -> {out}"
        )
    else:
        print(
            f"scored {len(scored)} examples in {selection_seconds:.1f}s ({whisperer.stats}); "
            f"top {args.select_fraction:.0%} = {len(selected)} examples -> {out}"
        )
    return 0
