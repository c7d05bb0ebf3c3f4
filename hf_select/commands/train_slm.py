"""``hf-select train slm``: train a causal LM with RHO-1 Selective Language Modeling (arXiv 2404.07965)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.utils import logging

from ..loading import ModelArguments, load_any_dataset, load_causal_lm, load_model_and_tokenizer
from ..trainer_ext.slm_config import SLMConfig

logger = logging.get_logger(__name__)


@dataclass
class SLMDataArguments:
    """Training data and reference model of ``hf-select train slm``."""

    dataset_name_or_path: str = field(
        default=None,
        metadata={
            "help": "Hub id, save_to_disk folder or json/parquet file: raw text (text_column) or packed rows "
            "(input_ids, labels, position_ids, optionally ref_loss from 'hf-select reference-losses')."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to train on."})
    text_column: str = field(default="text", metadata={"help": "Text column of a raw-text dataset."})
    seq_length: int = field(default=1024, metadata={"help": "Tokens per packed row (raw-text datasets)."})
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Online reference model (same tokenizer). Not needed when the rows carry ref_loss or the "
            "model is a peft model."
        },
    )


def training_rows(dataset, tokenizer, text_column: str, seq_length: int):
    """Packed rows of ``dataset``: used as they are when they have ``input_ids``, else tokenised (BOS + text +
    EOS per document) and packed with document masking."""
    from ..packing import pack_dataset_batch

    if "input_ids" in dataset.column_names:
        return dataset
    if text_column not in dataset.column_names:
        raise ValueError(
            f"dataset has neither input_ids nor a {text_column!r} column: {dataset.column_names}"
        )
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def encode(batch):
        return {
            "input_ids": [
                bos + x + eos for x in tokenizer(batch[text_column], add_special_tokens=False).input_ids
            ]
        }

    tokens = dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenize")
    return tokens.map(
        pack_dataset_batch,
        batched=True,
        batch_size=1000,
        remove_columns=tokens.column_names,
        fn_kwargs={"max_length": seq_length},
        desc="pack",
    )


CONFIG_CLASSES = (ModelArguments, SLMDataArguments, SLMConfig)


def run(model_args: ModelArguments, data_args: SLMDataArguments, args: SLMConfig) -> int:
    from ..trainer_ext.slm_trainer import SLMTrainer

    if not data_args.dataset_name_or_path:
        raise ValueError("--dataset_name_or_path is required")
    model, tokenizer = load_model_and_tokenizer(model_args)
    dataset = load_any_dataset(data_args.dataset_name_or_path, data_args.dataset_split)
    rows = training_rows(dataset, tokenizer, data_args.text_column, data_args.seq_length)
    ref_model = None
    if data_args.ref_model_name_or_path and "ref_loss" not in rows.column_names:
        ref_model = load_causal_lm(data_args.ref_model_name_or_path, dtype=model_args.dtype)
    trainer = SLMTrainer(
        model=model.train(), args=args, ref_model=ref_model, train_dataset=rows, processing_class=tokenizer
    )
    trainer.train()
    trainer.save_model(args.output_dir)
    logger.warning(f"SLM model saved to {args.output_dir}")
    return 0
