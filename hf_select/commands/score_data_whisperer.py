"""``hf-select score data-whisperer``: add Data Whisperer scores to a question/answer dataset.

Writes the scored dataset (``save_to_disk``) and ``selection.json`` (top-fraction indices, selection wall-clock,
counters) to ``--output_dir``; ``hf-select finetune`` reads both.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers.utils import logging

from ..loading import ModelArguments

logger = logging.get_logger(__name__)


@dataclass
class DataWhispererArguments:
    """What to score and how (Data Whisperer, arXiv 2505.12212)."""

    dataset_name_or_path: str = field(
        default=None, metadata={"help": "Hub id, save_to_disk folder or json/jsonl/parquet/csv file."}
    )
    split: str = field(default="train", metadata={"help": "Split to score."})
    output_dir: str = field(default="dw_scores", metadata={"help": "Where the scored dataset is written."})
    question_column: str = field(default="question", metadata={"help": "Column holding the question."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the gold answer."})
    score_column: str = field(default="dw_score", metadata={"help": "Name of the added score column."})
    n_demos: int = field(default=5, metadata={"help": "Demonstrations per prompt."})
    n_queries: int = field(default=3, metadata={"help": "Queries answered per prompt."})
    attn_layer: int | None = field(default=None, metadata={"help": "Attention layer (default: middle)."})
    metric: str = field(default="auto", metadata={"help": "auto, exact_match or rouge_l."})
    rounds: int = field(default=1, metadata={"help": "Passes over the pool; scores are averaged."})
    seed: int = field(default=0, metadata={"help": "Shuffling seed."})
    max_answer_tokens: int = field(default=48, metadata={"help": "New tokens per query answer."})
    max_retries: int = field(default=3, metadata={"help": "Re-draws of an unparseable prompt."})
    query_mode: str = field(
        default="joint",
        metadata={
            "help": "joint: one generation answers every query (paper); separate: one batched prompt per query."
        },
    )
    max_examples: int | None = field(default=None, metadata={"help": "Score only the first N examples."})
    select_fraction: float = field(default=0.1, metadata={"help": "Fraction recorded in selection.json."})
    device: str | None = field(default=None, metadata={"help": "Device for the scoring model (cpu, cuda)."})


CONFIG_CLASSES = (ModelArguments, DataWhispererArguments)


def run(model_args: ModelArguments, args: DataWhispererArguments) -> int:
    from ..data_whisperer.scorer import DataWhisperer
    from ..loading import load_any_dataset, load_model_and_tokenizer, require_columns
    from ..selection import top_fraction_indices

    if not args.dataset_name_or_path:
        raise ValueError("--dataset_name_or_path is required")
    dataset = load_any_dataset(args.dataset_name_or_path, args.split)
    require_columns(dataset, [args.question_column, args.answer_column], "dataset to score")
    if args.max_examples:
        dataset = dataset.select(range(min(args.max_examples, len(dataset))))
    model, tokenizer = load_model_and_tokenizer(model_args, device=args.device)
    whisperer = DataWhisperer(
        model,
        tokenizer,
        n_demos=args.n_demos,
        n_queries=args.n_queries,
        attn_layer=args.attn_layer,
        metric=args.metric,
        rounds=args.rounds,
        seed=args.seed,
        question_column=args.question_column,
        answer_column=args.answer_column,
        max_answer_tokens=args.max_answer_tokens,
        max_retries=args.max_retries,
        query_mode=args.query_mode,
    )
    start = time.perf_counter()
    scored = whisperer.add_scores(dataset, args.score_column)
    seconds = time.perf_counter() - start
    out = Path(args.output_dir)
    scored.save_to_disk(str(out / "dataset"))
    selected = top_fraction_indices(scored[args.score_column], args.select_fraction)
    summary = {
        "selection_seconds": seconds,
        "selected_indices": selected.tolist(),
        "stats": whisperer.stats,
        "attn_layer": whisperer.attn_layer,
        "model": model_args.model_name_or_path,
        "params": asdict(args),
    }
    (out / "selection.json").write_text(json.dumps(summary, indent=2))
    print(
        f"scored {len(scored)} examples in {seconds:.1f}s ({whisperer.stats}); "
        f"top {args.select_fraction:.0%} = {len(selected)} examples -> {out}"
    )
    return 0
