"""``hf-select train slm``: train a causal LM with RHO-1 Selective Language Modeling (arXiv 2404.07965)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.utils import logging

from ..loading import (
    DataArguments,
    ModelArguments,
    load_causal_lm,
    load_model_and_tokenizer,
    load_tokenizer,
)
from ..trainer_ext.slm_config import SLMConfig

logger = logging.get_logger(__name__)


@dataclass
class SLMDataArguments(DataArguments):
    """Training data and reference model of ``hf-select train slm``: raw text (``text_column``) or packed rows
    (``input_ids``, ``labels``, ``position_ids``, optionally ``ref_loss`` from ``hf-select reference-losses``)."""

    seq_length: int = field(default=1024, metadata={"help": "Tokens per packed row (raw-text datasets)."})
    overflow: str = field(
        default="split",
        metadata={
            "help": "Documents longer than a row (raw-text datasets): 'split' (default) continues them in "
            "further rows, 'truncate' drops the overflow (and logs how many tokens)."
        },
    )
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Online reference model (same tokenizer). Not needed when the rows carry ref_loss or the "
            "model is a peft model."
        },
    )


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


CONFIG_CLASSES = (ModelArguments, SLMDataArguments, SLMConfig)


def run(model_args: ModelArguments, data_args: SLMDataArguments, args: SLMConfig) -> int:
    from ..trainer_ext.slm_trainer import SLMTrainer

    if not data_args.dataset_name_or_path:
        raise ValueError("--dataset_name_or_path is required")
    model, tokenizer = load_model_and_tokenizer(model_args)
    dataset = data_args.load_dataset()
    rows = training_rows(
        dataset, tokenizer, data_args.text_column, data_args.seq_length, overflow=data_args.overflow
    )
    ref_model = ref_tokenizer = None
    if data_args.ref_model_name_or_path and "ref_loss" not in rows.column_names:
        ref_model = load_causal_lm(data_args.ref_model_name_or_path, dtype=model_args.dtype)
        ref_tokenizer = load_tokenizer(data_args.ref_model_name_or_path, pad=False)
    trainer = SLMTrainer(
        model=model.train(),
        args=args,
        ref_model=ref_model,
        train_dataset=rows,
        processing_class=tokenizer,
        ref_tokenizer=ref_tokenizer,
    )
    trainer.train()
    trainer.save_model(args.output_dir)
    logger.warning(f"SLM model saved to {args.output_dir}")
    return 0
