"""``hf-select reference-losses``: precompute RHO-1 reference losses on packed training rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.utils import logging

from ..loading import ModelArguments, load_any_dataset, load_model_and_tokenizer, load_tokenizer

logger = logging.get_logger(__name__)


@dataclass
class ReferenceLossArguments:
    """Rows to score and where the result goes."""

    dataset_name_or_path: str = field(
        default=None,
        metadata={"help": "Raw text (text_column) or packed rows (input_ids, labels, position_ids)."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to score."})
    text_column: str = field(default="text", metadata={"help": "Text column of a raw-text dataset."})
    seq_length: int = field(
        default=1024, metadata={"help": "Tokens per packed row; must equal the training run's seq_length."}
    )
    output_dir: str = field(
        default=None, metadata={"help": "Where the rows with ref_loss are saved (save_to_disk)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Rows per reference forward pass."})
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
            "the student's tokens through character offsets (raw-text datasets only)."
        },
    )


CONFIG_CLASSES = (ModelArguments, ReferenceLossArguments)


def run(model_args: ModelArguments, args: ReferenceLossArguments) -> int:
    from datasets import Dataset

    from ..slm.reference_losses import compute_reference_losses
    from .train_slm import training_rows

    if not args.dataset_name_or_path or not args.output_dir:
        raise ValueError("--dataset_name_or_path and --output_dir are required")
    model, tokenizer = load_model_and_tokenizer(model_args)
    dataset = load_any_dataset(args.dataset_name_or_path, args.dataset_split)
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    if args.student_tokenizer:
        from ..packing import pack_documents
        from ..slm.cross_tokenizer import cross_tokenizer_reference_losses

        student = load_tokenizer(args.student_tokenizer)
        docs = cross_tokenizer_reference_losses(
            dataset[args.text_column], model, tokenizer, student, args.batch_size
        )
        rows = pack_documents(
            [d["input_ids"] for d in docs],
            args.seq_length,
            columns={"ref_loss": [d["ref_loss"] for d in docs]},
        )
        result = Dataset.from_dict(rows)
    else:
        rows = training_rows(dataset, tokenizer, args.text_column, args.seq_length)
        result = compute_reference_losses(
            rows,
            model,
            batch_size=args.batch_size,
            pad_token_id=tokenizer.pad_token_id or 0,
            with_entropy=args.with_entropy,
            storage_dtype=args.storage_dtype,
            model_id=f"{model_args.model_name_or_path}@{model_args.revision}",
        )
    result.save_to_disk(args.output_dir)
    logger.warning(f"{len(result)} rows with ref_loss saved to {args.output_dir}")
    return 0
