"""``hf-select reference-losses``: precompute RHO-1 reference losses on packed training rows, resumably
(:func:`hf_select.slm.jobs.reference_losses_to_disk`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..loading import DataArguments, ModelArguments, load_model_and_tokenizer, load_tokenizer


@dataclass
class ReferenceLossArguments(DataArguments):
    """Rows to score and where the result goes (the dataset: raw text in ``text_column`` or packed rows with
    ``input_ids``, ``labels``, ``position_ids``)."""

    seq_length: int = field(
        default=1024, metadata={"help": "Tokens per packed row; must equal the training run's seq_length."}
    )
    overflow: str = field(
        default="split",
        metadata={
            "help": "Documents longer than a row: 'split' (default) continues them in further rows, "
            "'truncate' drops the overflow. Must equal the training run's --overflow."
        },
    )
    output_dir: str = field(
        default=None, metadata={"help": "Where the rows with ref_loss are saved (save_to_disk)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Rows per reference forward pass."})
    part_size: int = field(
        default=2048, metadata={"help": "Rows (documents with --student_tokenizer) per resumable part."}
    )
    storage_dtype: str = field(
        default="float32",
        metadata={"help": "Stored precision of ref_loss: float32 (exact) or float16 (half size)."},
    )
    with_entropy: bool = field(
        default=False, metadata={"help": "Also store ref_entropy (for the reference_entropy score)."}
    )
    max_samples: int | None = field(default=None, metadata={"help": "Score only the first N documents/rows."})
    student_tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer of the student when it differs from the reference's: losses are projected onto "
            "the student's tokens through character offsets (raw-text datasets only); student tokens without a "
            "reference value (special tokens, past the reference window) get NaN and are never selected."
        },
    )
    cross_tokenizer_split: str = field(
        default="exact",
        metadata={
            "help": "With --student_tokenizer: split a reference token cut by student boundaries by the reference's "
            "prefix probabilities (exact) or evenly over its characters (uniform, biased)."
        },
    )

    def __post_init__(self):
        if hasattr(super(), "__post_init__"):
            super().__post_init__()
        if self.cross_tokenizer_split not in ("exact", "uniform"):
            raise ValueError(f"cross_tokenizer_split must be 'exact' or 'uniform', got {self.cross_tokenizer_split!r}")


CONFIG_CLASSES = (ModelArguments, ReferenceLossArguments)


def run(model_args: ModelArguments, args: ReferenceLossArguments) -> int:
    from ..slm.jobs import reference_losses_to_disk

    if not args.dataset_name_or_path or not args.output_dir:
        raise ValueError("--dataset_name_or_path and --output_dir are required")
    model, tokenizer = load_model_and_tokenizer(model_args)
    dataset = args.load_dataset()
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    student = load_tokenizer(args.student_tokenizer) if args.student_tokenizer else None
    reference_losses_to_disk(model, tokenizer, dataset, args.output_dir, args.text_column, args.seq_length,
                             args.overflow, args.batch_size, args.part_size, args.storage_dtype,
                             args.with_entropy, student, args.dataset_name_or_path,
                             args.cross_tokenizer_split)  # fmt: skip
    return 0
