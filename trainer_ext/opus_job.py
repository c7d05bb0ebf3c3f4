"""``hf-select train opus`` as a library call: the corpus and proxy options (:class:`OPUSDataArguments`) and
:func:`train_opus`, which packs corpus and proxy rows and trains with :class:`~hf_select.trainer_ext.OPUSTrainer`
(OPUS dynamic batch selection, arXiv 2602.05400)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.utils import logging

from hf_select.loading import DataArguments, ModelArguments

from .opus_config import OPUSConfig

logger = logging.get_logger(__name__)


@dataclass
class OPUSDataArguments(DataArguments):
    """Training corpus (``--dataset_name_or_path``, alias ``--dataset``) and proxy set of ``hf-select train
    opus``; ``text_column`` is the text of the corpus and proxy documents."""

    dataset_name_or_path: str = field(
        default=None,
        metadata={
            "help": "Training corpus: Hub id, save_to_disk folder or file.",
            "aliases": ["--dataset", "--dataset_name"],
        },
    )
    domain_column: str | None = field(
        default="domain", metadata={"help": "Column used to log the selected share per domain (if present)."}
    )
    max_length: int = field(default=1024, metadata={"help": "Tokens per packed training row."})
    proxy_dataset: str | None = field(
        default=None, metadata={"help": "Proxy documents (Hub id / folder / file with text_column)."}
    )
    proxy_tasks: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Harness task YAML files: build the proxy pool from the corpus documents most similar to "
            "their train/dev items (used when proxy_dataset is not given)."
        },
    )
    proxy_pool_size: float = field(
        default=0.02, metadata={"help": "Proxy pool size: a count, or a fraction of the corpus when < 1."}
    )


def tokenize_and_pack(
    dataset, tokenizer, text_column: str, max_length: int, domain_column: str | None = None
):
    """Packed rows (``input_ids, labels, position_ids`` and ``domain`` when known), one domain per row."""
    from hf_select.packing import pack_dataset, tokenize_documents

    tokens = tokenize_documents(dataset, tokenizer, text_column)
    rows = pack_dataset(tokens, max_length, group_column=domain_column)
    if domain_column is not None and domain_column != "domain" and domain_column in rows.column_names:
        rows = rows.rename_column(domain_column, "domain")
    return rows


def train_opus(model_args: ModelArguments, data: OPUSDataArguments, config: OPUSConfig) -> None:
    """Train on ``data``'s corpus with OPUS selection against its proxy set; saves to ``config.output_dir``."""
    from hf_select.loading import load_any_dataset, load_model_and_tokenizer
    from hf_select.opus.proxy_pool import benchmark_proxy_texts, build_proxy_pool

    from .opus_trainer import OPUSTrainer

    if not data.dataset_name_or_path:
        raise ValueError("--dataset (or --dataset_name_or_path) is required")
    model, tokenizer = load_model_and_tokenizer(model_args)
    corpus = data.load_dataset()
    if data.proxy_dataset:
        proxy_docs = load_any_dataset(data.proxy_dataset, "train")
    elif data.proxy_tasks:
        targets = benchmark_proxy_texts(data.proxy_tasks)
        proxy_docs = build_proxy_pool(corpus, targets, data.proxy_pool_size, data.text_column)
    else:
        raise ValueError("OPUS needs a proxy set: pass --proxy_dataset or --proxy_tasks")
    train_rows = tokenize_and_pack(corpus, tokenizer, data.text_column, data.max_length, data.domain_column)
    proxy_rows = tokenize_and_pack(proxy_docs, tokenizer, data.text_column, data.max_length, None)
    config.remove_unused_columns = False
    trainer = OPUSTrainer(
        model=model.train(),
        args=config,
        train_dataset=train_rows,
        proxy_dataset=proxy_rows,
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(config.output_dir)
    tokenizer.save_pretrained(config.output_dir)
    logger.warning(f"OPUS model saved to {config.output_dir}")
