"""The training commands as library calls: ``hf-select train slm`` (:func:`train_slm`, RHO-1 Selective Language
Modeling, arXiv 2404.07965), ``train meco`` (:func:`train_meco`, metadata conditioning then cooldown, arXiv
2501.01956) and ``train opus`` (:func:`train_opus`, OPUS dynamic batch selection, arXiv 2602.05400), each with
its data options next to it. The trainer's own parameters are its config (:class:`SLMConfig`,
:class:`MeCoConfig`, :class:`OPUSConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.utils import logging

from hf_select.loading import (
    DataArguments,
    DatasetSourceArguments,
    ModelArguments,
    load_any_dataset,
    load_causal_lm,
    load_model_and_tokenizer,
    load_tokenizer,
)
from hf_select.slm.jobs import training_rows

from .meco_config import MeCoConfig
from .opus_config import OPUSConfig
from .slm_config import SLMConfig

logger = logging.get_logger(__name__)


def _train_and_save(trainer, output_dir: str, method: str, tokenizer=None, resume_from_checkpoint=None) -> None:
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_model(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    logger.warning(f"{method} model saved to {output_dir}")


# ---------------------------------------------------------------------------------------------------- SLM

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


def train_slm(model_args: ModelArguments, data_args: SLMDataArguments, args: SLMConfig) -> None:
    """Train ``model_args``'s model on ``data_args``'s rows with Selective Language Modeling; saves to
    ``args.output_dir``."""
    from .slm_trainer import SLMTrainer

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
    trainer = SLMTrainer(model.train(), args, ref_model=ref_model, train_dataset=rows, processing_class=tokenizer,
                         ref_tokenizer=ref_tokenizer)  # fmt: skip
    _train_and_save(trainer, args.output_dir, "SLM")


# --------------------------------------------------------------------------------------------------- MeCo

@dataclass
class MeCoDataArguments(DatasetSourceArguments):
    """Which documents MeCo trains on (``dataset_name_or_path``: the conditioning-phase documents; the text column is MeCoConfig's
    ``text_column``)."""

    cooldown_dataset_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Separate documents for the cooldown (must not overlap the conditioning ones); default: "
            "a disjoint part of --dataset_name_or_path (--cooldown_pool_fraction)."
        },
    )
    cooldown_dataset_split: str = field(
        default="train", metadata={"help": "Split of the cooldown documents."}
    )
    max_documents: int | None = field(
        default=None, metadata={"help": "Use only the first N documents of each dataset (for quick tries)."}
    )
    from_scratch: bool = field(
        default=False,
        metadata={
            "help": "Initialise the model randomly from the config of --model_name_or_path (pretraining)."
        },
    )


def _meco_documents(name: str, split: str, config: str | None, limit: int | None):
    data = load_any_dataset(name, split=split, config_name=config)
    return data.select(range(min(limit, len(data)))) if limit is not None else data


def _meco_model(args: ModelArguments, from_scratch: bool, seed: int):
    if not from_scratch:
        return load_causal_lm(
            args.model_name_or_path,
            args.revision,
            args.dtype,
            args.attn_implementation,
            args.trust_remote_code,
        ).train()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(
        args.model_name_or_path, revision=args.revision, trust_remote_code=args.trust_remote_code
    )
    torch.manual_seed(seed)
    kwargs = {"attn_implementation": args.attn_implementation} if args.attn_implementation else {}
    return AutoModelForCausalLM.from_config(config, trust_remote_code=args.trust_remote_code, **kwargs)


def train_meco(model_args: ModelArguments, data_args: MeCoDataArguments, config: MeCoConfig) -> None:
    """Train on ``data_args``'s documents with MeCo; saves the model and tokenizer to ``config.output_dir``
    (``from_scratch``: a random model from ``model_args``'s config, seeded by ``config.seed``)."""
    from .meco_trainer import MeCoTrainer

    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (with --from_scratch only its config is used)")
    if not data_args.dataset_name_or_path:
        raise ValueError("--dataset_name_or_path is required")
    tokenizer = load_tokenizer(
        model_args.tokenizer_name_or_path or model_args.model_name_or_path,
        None if model_args.tokenizer_name_or_path else model_args.revision,
        model_args.trust_remote_code,
    )
    documents = _meco_documents(
        data_args.dataset_name_or_path,
        data_args.split,
        data_args.dataset_config,
        data_args.max_documents,
    )
    cooldown = None
    if data_args.cooldown_dataset_name_or_path:
        cooldown = _meco_documents(
            data_args.cooldown_dataset_name_or_path,
            data_args.cooldown_dataset_split,
            None,
            data_args.max_documents,
        )
    model = _meco_model(model_args, data_args.from_scratch, config.seed)
    trainer = MeCoTrainer(
        model, config, train_dataset=documents, cooldown_dataset=cooldown, processing_class=tokenizer
    )
    _train_and_save(trainer, config.output_dir, "MeCo", tokenizer, config.resume_from_checkpoint)


# --------------------------------------------------------------------------------------------------- OPUS

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
    trainer = OPUSTrainer(model.train(), config, train_dataset=train_rows, proxy_dataset=proxy_rows,
                          processing_class=tokenizer)  # fmt: skip
    _train_and_save(trainer, config.output_dir, "OPUS", tokenizer)
