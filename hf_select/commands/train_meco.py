"""``hf-select train meco``: pretraining with metadata conditioning then cooldown (arXiv 2501.01956).

Example::

    hf-select train meco --model_name_or_path my-config-or-model --from_scratch \\
        --dataset_name_or_path corpus.jsonl --metadata_column url --max_steps 40000 \\
        --output_dir meco-run --save_steps 1000

Resuming (``--resume_from_checkpoint meco-run/checkpoint-37000``) continues the same run, before or after the
switch to the cooldown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.utils import logging

from ..loading import DatasetSourceArguments, ModelArguments, load_any_dataset, load_causal_lm, load_tokenizer

logger = logging.get_logger(__name__)


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


def _documents(name: str, split: str, config: str | None, limit: int | None):
    data = load_any_dataset(name, split=split, config_name=config)
    return data.select(range(min(limit, len(data)))) if limit is not None else data


def _model(args: ModelArguments, from_scratch: bool, seed: int):
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


def run(model_args: ModelArguments, data_args: MeCoDataArguments, config) -> int:
    from ..trainer_ext import MeCoTrainer

    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (with --from_scratch only its config is used)")
    if not data_args.dataset_name_or_path:
        raise ValueError("--dataset_name_or_path is required")
    tokenizer = load_tokenizer(
        model_args.tokenizer_name_or_path or model_args.model_name_or_path,
        None if model_args.tokenizer_name_or_path else model_args.revision,
        model_args.trust_remote_code,
    )
    documents = _documents(
        data_args.dataset_name_or_path,
        data_args.split,
        data_args.dataset_config,
        data_args.max_documents,
    )
    cooldown = None
    if data_args.cooldown_dataset_name_or_path:
        cooldown = _documents(
            data_args.cooldown_dataset_name_or_path,
            data_args.cooldown_dataset_split,
            None,
            data_args.max_documents,
        )
    model = _model(model_args, data_args.from_scratch, config.seed)
    trainer = MeCoTrainer(
        model, config, train_dataset=documents, cooldown_dataset=cooldown, processing_class=tokenizer
    )
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model(config.output_dir)
    tokenizer.save_pretrained(config.output_dir)
    logger.warning(f"MeCo model saved to {config.output_dir}")
    return 0


def _config_classes():
    from ..trainer_ext import MeCoConfig

    return (ModelArguments, MeCoDataArguments, MeCoConfig)


CONFIG_CLASSES = _config_classes()
