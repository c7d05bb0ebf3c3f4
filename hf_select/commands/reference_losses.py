"""``hf-select reference-losses``: precompute RHO-1 reference losses on packed training rows.

Resumable: the rows are scored part by part with :func:`hf_select.sharded_map.sharded_map` (parquet parts plus
completion markers under ``<output_dir>/parts``; works under ``torchrun`` too), so a killed job re-run with the
same arguments scores only the missing parts and gives the same result as a clean run. The resume key is
:func:`hf_select.fingerprint.fingerprint` of the data, every argument and the reference's weights checksum, so
a reference retrained in place is never mixed with old parts. Rank 0 merges the parts into ``<output_dir>``
(``save_to_disk``) and then removes them. Nothing is written next to the input dataset: every ``Dataset.map``
here keeps its result in memory.

Documents longer than ``seq_length`` are split into further rows by default (``--overflow split``), exactly
as ``hf-select train slm`` packs them; ``--overflow truncate`` drops the overflow (and says how many tokens).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers.utils import logging

from ..loading import DataArguments, ModelArguments, load_model_and_tokenizer, load_tokenizer

logger = logging.get_logger(__name__)


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


def split_long_texts(texts: list[str], tokenizer, max_tokens: int) -> list[str]:
    """Cut every text into pieces of at most ``max_tokens`` tokens of ``tokenizer`` (at token boundaries,
    through character offsets), so that a reference scoring each piece alone sees the context the student
    will see in its packed row."""
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    pieces = []
    for text, offsets in zip(texts, enc.offset_mapping):
        if len(offsets) <= max_tokens:
            pieces.append(text)
            continue
        for start in range(0, len(offsets), max_tokens):
            window = offsets[start : start + max_tokens]
            begin = window[0][0] if start else 0
            end = offsets[start + max_tokens][0] if start + max_tokens < len(offsets) else len(text)
            pieces.append(text[begin:end])
    return pieces


def _pack_whole(ids: list[list[int]], losses: list[list[float]], seq_length: int) -> dict[str, list]:
    """Pack documents into rows without cutting any that fits a row: a document that does not fit in the
    rest of a row starts the next one, so every trained token keeps the context its projected reference loss
    was computed with (only a document longer than a row loses its overflow)."""
    from ..packing import pack_documents

    rows: dict[str, list] = {}
    group: list[int] = []
    used = 0

    def flush():
        if group:
            packed = pack_documents(
                [ids[i] for i in group], seq_length, columns={"ref_loss": [losses[i] for i in group]}
            )
            for key, values in packed.items():
                rows.setdefault(key, []).extend(values)

    for i, doc in enumerate(ids):
        if group and used + len(doc) > seq_length:
            flush()
            group, used = [], 0
        group.append(i)
        used += len(doc)
    flush()
    return rows


def _cross_tokenizer_batch(batch, text_column, model, tokenizer, student, batch_size, split):
    from ..slm.cross_tokenizer import cross_tokenizer_reference_losses

    docs = cross_tokenizer_reference_losses(
        batch[text_column], model, tokenizer, student, batch_size, split=split
    )
    return {"input_ids": [d["input_ids"] for d in docs], "ref_loss": [d["ref_loss"] for d in docs]}


def run(model_args: ModelArguments, args: ReferenceLossArguments) -> int:
    import functools

    from datasets import Dataset

    from ..fingerprint import fingerprint, model_fingerprint
    from ..sharded_map import (
        distributed_rank_and_world_size,
        load_sharded_output,
        sharded_map,
        wait_for_ranks,
    )
    from ..slm.reference_losses import cast_reference_columns, reference_loss_function
    from .train_slm import OVERFLOW_POLICIES, training_rows

    if not args.dataset_name_or_path or not args.output_dir:
        raise ValueError("--dataset_name_or_path and --output_dir are required")
    if args.overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"--overflow must be one of {sorted(OVERFLOW_POLICIES)}, got {args.overflow!r}")
    rank, world_size = distributed_rank_and_world_size()
    model, tokenizer = load_model_and_tokenizer(model_args)
    dataset = args.load_dataset()
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    out = Path(args.output_dir)
    parts = out / "parts"
    # part_size is checked by sharded_map itself (a clearer message than a fingerprint mismatch)
    settings = {k: v for k, v in asdict(args).items() if k not in ("output_dir", "batch_size", "part_size")}
    settings.pop("dataset_name_or_path")  # the data enters the key through its fingerprint
    key = [
        "reference-losses",
        getattr(dataset, "_fingerprint", None),
        settings,
        model_fingerprint(model, tokenizer),
    ]
    if args.student_tokenizer:

        if args.text_column not in dataset.column_names:
            raise ValueError(
                f"--student_tokenizer needs raw text: no {args.text_column!r} column in "
                f"{args.dataset_name_or_path} ({dataset.column_names})"
            )
        student = load_tokenizer(args.student_tokenizer)
        key.append({"student": getattr(student, "name_or_path", ""), "student_vocab": len(student)})
        if args.overflow == "split":  # BOS + piece + EOS fits a row; re-encoding may add a token at a cut
            texts = split_long_texts(dataset[args.text_column], student, max(1, args.seq_length - 4))
            dataset = Dataset.from_dict({args.text_column: texts})
        function = functools.partial(
            _cross_tokenizer_batch,
            text_column=args.text_column,
            model=model,
            tokenizer=tokenizer,
            student=student,
            batch_size=args.batch_size,
            split=args.cross_tokenizer_split,
        )
        source = dataset
        map_kwargs = {"remove_columns": dataset.column_names}
    else:
        source = training_rows(dataset, tokenizer, args.text_column, args.seq_length, overflow=args.overflow)
        function = reference_loss_function(
            model,
            pad_token_id=tokenizer.pad_token_id or 0,
            with_entropy=args.with_entropy,
            storage_dtype=args.storage_dtype,
        )
        map_kwargs = {}
    sharded_map(
        source,
        function,
        parts,
        fingerprint(*key),
        part_size=args.part_size,
        batch_size=args.batch_size,
        map_kwargs=map_kwargs,
    )
    if rank != 0:
        return 0
    wait_for_ranks(parts, world_size)
    result = load_sharded_output(parts, world_size, expected_input_rows=len(source))
    if args.student_tokenizer:
        packed = _pack_whole(list(result["input_ids"]), list(result["ref_loss"]), args.seq_length)
        dropped = sum(map(len, result["input_ids"])) - sum(map(len, packed["input_ids"]))
        if dropped:
            logger.warning(f"{dropped} tokens past --seq_length {args.seq_length} were dropped")
        result = Dataset.from_dict(packed)
    if len(result) == 0:
        raise ValueError(f"no rows to write: {args.dataset_name_or_path} gave no trainable tokens")
    result = cast_reference_columns(result, args.storage_dtype)
    result.save_to_disk(str(out))
    shutil.rmtree(parts)
    logger.warning(f"{len(result)} rows with ref_loss saved to {args.output_dir}")
    return 0
