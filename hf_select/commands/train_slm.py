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


CONFIG_CLASSES = (ModelArguments, SLMDataArguments, SLMConfig)


def run(model_args: ModelArguments, data_args: SLMDataArguments, args: SLMConfig) -> int:
    from ..slm.jobs import training_rows
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
