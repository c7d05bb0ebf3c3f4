"""RHO-1 data jobs (arXiv 2404.07965): packed training rows, and reference losses of a whole dataset computed
resumably on one or many processes.

:func:`reference_losses_to_disk` scores the rows part by part with :func:`hf_select.sharded_map` (parquet parts
plus completion markers under ``<output_dir>/parts``; works under ``torchrun`` too), so a killed job re-run with
the same arguments scores only the missing parts and gives the same result as a clean run. The resume key is
:func:`hf_select.fingerprint.fingerprint` of the data, every setting and the reference's weights checksum, so a
reference retrained in place is never mixed with old parts. Rank 0 merges the parts into ``output_dir``
(``save_to_disk``) and then removes them. Nothing is written next to the input dataset: every ``Dataset.map``
here keeps its result in memory.

Documents longer than ``seq_length`` are split into further rows by default (``overflow="split"``), exactly as
``hf-select train slm`` packs them (:func:`training_rows`); ``"truncate"`` drops the overflow (and says how
many tokens).
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from transformers.utils import logging

from ..loading import DataArguments, ModelArguments, load_model_and_tokenizer, load_tokenizer
from ..sharded_map import distributed_rank_and_world_size, load_sharded_output, sharded_map, wait_for_ranks

logger = logging.get_logger(__name__)


# --overflow -> pack_documents(overflow=...)
OVERFLOW_POLICIES = {"split": "carry", "truncate": "discard"}


def training_rows(dataset, tokenizer, text_column: str, seq_length: int, overflow: str = "split"):
    """Packed rows of ``dataset``: used as they are when they have ``input_ids``, else tokenised (BOS + text +
    EOS per document) and packed with document masking.

    ``overflow`` says what happens to a document longer than the room left in its row (RHO-1 trains on
    documents of any length; silently losing every token past ``seq_length`` was a bug): ``"split"``
    (default) continues it in the next row(s) as a new segment (its first token there is not trained, the
    position restarts), ``"truncate"`` drops the rest and logs how many tokens were dropped. The maps keep
    their results in memory, so nothing is written next to the input dataset.
    """
    from ..packing import pack_dataset, tokenize_documents

    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {sorted(OVERFLOW_POLICIES)}, got {overflow!r}")
    if "input_ids" in dataset.column_names:
        return dataset
    if text_column not in dataset.column_names:
        raise ValueError(
            f"dataset has neither input_ids nor a {text_column!r} column: {dataset.column_names}"
        )
    tokens = tokenize_documents(dataset, tokenizer, text_column, remove_columns=True, keep_in_memory=True)
    rows = pack_dataset(tokens, seq_length, overflow=OVERFLOW_POLICIES[overflow], keep_in_memory=True)
    if overflow == "truncate":
        dropped = sum(map(len, tokens["input_ids"])) - sum(map(len, rows["input_ids"]))
        if dropped:
            logger.warning(f"--overflow truncate: {dropped} tokens past --seq_length {seq_length} dropped")
    return rows


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


def pack_whole(ids: list[list[int]], losses: list[list[float]], seq_length: int) -> dict[str, list]:
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
    from .cross_tokenizer import cross_tokenizer_reference_losses

    docs = cross_tokenizer_reference_losses(batch[text_column], model, tokenizer, student, batch_size, split=split)
    return {"input_ids": [d["input_ids"] for d in docs], "ref_loss": [d["ref_loss"] for d in docs]}


def _scoring_plan(model, tokenizer, dataset, settings: dict, batch_size: int, student_tokenizer, source: str):
    """The rows to score, the batched function, its map arguments and the resume key (data, settings, weights)."""
    from datasets import Dataset

    from ..fingerprint import model_fingerprint
    from .reference_losses import reference_loss_function

    text_column, seq_length = settings["text_column"], settings["seq_length"]
    key = ["reference-losses", getattr(dataset, "_fingerprint", None), settings, model_fingerprint(model, tokenizer)]
    if student_tokenizer is None:
        rows = training_rows(dataset, tokenizer, text_column, seq_length, overflow=settings["overflow"])
        function = reference_loss_function(model, pad_token_id=tokenizer.pad_token_id or 0,
                                           with_entropy=settings["with_entropy"],
                                           storage_dtype=settings["storage_dtype"])  # fmt: skip
        return rows, function, {}, key
    if text_column not in dataset.column_names:
        raise ValueError(
            f"--student_tokenizer needs raw text: no {text_column!r} column in {source} ({dataset.column_names})"
        )
    key.append({"student": getattr(student_tokenizer, "name_or_path", ""), "student_vocab": len(student_tokenizer)})
    if settings["overflow"] == "split":  # BOS + piece + EOS fits a row; re-encoding may add a token at a cut
        texts = split_long_texts(dataset[text_column], student_tokenizer, max(1, seq_length - 4))
        dataset = Dataset.from_dict({text_column: texts})
    function = functools.partial(_cross_tokenizer_batch, text_column=text_column, model=model,
                                 tokenizer=tokenizer, student=student_tokenizer, batch_size=batch_size,
                                 split=settings["cross_tokenizer_split"])  # fmt: skip
    return dataset, function, {"remove_columns": dataset.column_names}, key


def reference_losses_to_disk(
    model,
    tokenizer,
    dataset,
    output_dir: str | Path,
    text_column: str = "text",
    seq_length: int = 1024,
    overflow: str = "split",
    batch_size: int = 8,
    part_size: int = 2048,
    storage_dtype: str = "float32",
    with_entropy: bool = False,
    student_tokenizer=None,
    source: str = "the dataset",
    cross_tokenizer_split: str = "exact",
):
    """Reference losses (``ref_loss``, optionally ``ref_entropy``) of every packed training row of ``dataset``,
    saved to ``output_dir`` (see the module docstring). Returns the saved ``Dataset`` on rank 0, else None.

    Args:
        model, tokenizer: the reference model and its tokenizer.
        dataset: raw text in ``text_column`` or packed rows (``input_ids``, ``labels``, ``position_ids``).
        seq_length, overflow: how raw text is packed (must equal the training run's).
        batch_size: rows per reference forward pass.
        part_size: rows (documents with ``student_tokenizer``) per resumable part.
        storage_dtype, with_entropy: see :func:`hf_select.slm.reference_losses.reference_loss_function`.
        student_tokenizer: the student's tokenizer when it differs from the reference's: losses are projected
            onto the student's tokens through character offsets (raw-text datasets only).
        source: the dataset's name, for messages.
        cross_tokenizer_split: with ``student_tokenizer``, how a reference token cut by student boundaries is
            split (:func:`hf_select.slm.cross_tokenizer.cross_tokenizer_reference_losses`: ``exact`` or
            ``uniform``).
    """
    from datasets import Dataset

    from ..fingerprint import fingerprint
    from .reference_losses import cast_reference_columns

    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"--overflow must be one of {sorted(OVERFLOW_POLICIES)}, got {overflow!r}")
    rank, world_size = distributed_rank_and_world_size()
    out = Path(output_dir)
    parts = out / "parts"
    settings = {"text_column": text_column, "seq_length": seq_length, "overflow": overflow,
                "storage_dtype": storage_dtype, "with_entropy": with_entropy}  # fmt: skip
    if student_tokenizer is not None:  # the split rule changes the projected values: part of the resume key
        settings["cross_tokenizer_split"] = cross_tokenizer_split
    rows, function, map_kwargs, key = _scoring_plan(
        model, tokenizer, dataset, settings, batch_size, student_tokenizer, source
    )
    # part_size is checked by sharded_map itself (a clearer message than a fingerprint mismatch)
    sharded_map(rows, function, parts, fingerprint(*key), part_size=part_size, batch_size=batch_size,
                map_kwargs=map_kwargs)  # fmt: skip
    if rank != 0:
        return None
    wait_for_ranks(parts, world_size)
    result = load_sharded_output(parts, world_size, expected_input_rows=len(rows))
    if student_tokenizer is not None:
        packed = pack_whole(list(result["input_ids"]), list(result["ref_loss"]), seq_length)
        dropped = sum(map(len, result["input_ids"])) - sum(map(len, packed["input_ids"]))
        if dropped:
            logger.warning(f"{dropped} tokens past --seq_length {seq_length} were dropped")
        result = Dataset.from_dict(packed)
    if len(result) == 0:
        raise ValueError(f"no rows to write: {source} gave no trainable tokens")
    result = cast_reference_columns(result, storage_dtype)
    result.save_to_disk(str(out))
    shutil.rmtree(parts)
    logger.warning(f"{len(result)} rows with ref_loss saved to {out}")
    return result


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
            "prefix probabilities (exact) or evenly over its characters (uniform, biased).",
            "choices": ["exact", "uniform"],
        },
    )


def reference_losses_job(model_args: ModelArguments, args: ReferenceLossArguments) -> None:
    """``hf-select reference-losses``: load the reference and the data that ``model_args`` and ``args`` name and
    run :func:`reference_losses_to_disk`."""
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


@dataclass
class TokenDynamicsArguments(DataArguments):
    """Options of ``hf-select token-dynamics`` (the dataset: raw text or packed rows)."""

    checkpoints: str = field(
        default=None, metadata={"help": "Comma-separated checkpoint folders or Hub ids, in training order."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer for raw text (default: the last checkpoint's)."}
    )
    seq_length: int = field(default=1024, metadata={"help": "Tokens per packed row (raw text)."})
    overflow: str = field(
        default="split",
        metadata={"help": "Documents longer than a row: 'split' (default, further rows) or 'truncate'."},
    )
    max_rows: int = field(default=256, metadata={"help": "Rows analysed (the first ones)."})
    batch_size: int = field(default=8, metadata={"help": "Rows per forward pass."})
    threshold: float = field(
        default=0.2, metadata={"help": "|slope * n| above which a token's loss changes."}
    )
    output_dir: str = field(
        default="token_dynamics", metadata={"help": "Where shares.json, table.md, plot go."}
    )


def token_dynamics_job(args: TokenDynamicsArguments) -> str:
    """``hf-select token-dynamics``: classify the token-loss dynamics of ``args.checkpoints`` on the first rows
    of the dataset and write ``shares.json``, ``table.md`` and the plot to ``args.output_dir``; returns the table."""
    from .token_dynamics import plot_token_dynamics, shares_table, token_loss_dynamics

    if not args.checkpoints or not args.dataset_name_or_path:
        raise ValueError("--checkpoints and --dataset_name_or_path are required")
    checkpoints = [c for c in args.checkpoints.split(",") if c]
    tokenizer = load_tokenizer(args.tokenizer_name_or_path or checkpoints[-1])
    rows = training_rows(
        args.load_dataset(),
        tokenizer,
        args.text_column,
        args.seq_length,
        overflow=args.overflow,
    )
    rows = rows.select(range(min(args.max_rows, len(rows))))
    result = token_loss_dynamics(
        checkpoints, rows, args.batch_size, tokenizer.pad_token_id or 0, threshold=args.threshold
    )
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shares.json").write_text(
        json.dumps({"shares": result["shares"], "checkpoints": checkpoints}, indent=2)
    )
    table = shares_table(result["shares"])
    (out / "table.md").write_text(table + "\n")
    plot_token_dynamics(result, out / "token_dynamics.png")
    return table
