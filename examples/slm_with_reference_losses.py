"""RHO-1 Selective Language Modeling (arXiv 2404.07965) with precomputed reference losses.

1. tokenise and pack the documents once (BOS + text + EOS, document-masked rows);
2. ``hf_select.compute_reference_losses`` adds the reference model's per-token loss to *those exact rows*
   (reference losses depend on the context, so they must come from the rows the trainer sees);
3. ``SLMTrainer`` trains the student on the ``token_select_ratio`` tokens with the highest excess loss
   (student loss - reference loss), with no reference forward during training.

    python examples/slm_with_reference_losses.py \\
        --model_name_or_path TinyLlama/TinyLlama_v1.1 --ref_model_name_or_path my-org/tinyllama-reference \\
        --dataset_name_or_path open-web-math/open-web-math --seq_length 2048 --max_samples 100000 \\
        --token_select_ratio 0.6 --learning_rate 8e-5 --per_device_train_batch_size 8 --output_dir slm/

Every ``SLMConfig`` / ``TrainingArguments`` option is a flag (``--select_scope``, ``--max_steps``, ...).
See docs/slm.md for the objective, the defaults and the traps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_select.trainer_ext import SLMConfig


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(metadata={"help": "Student model (Hub id or folder)."})
    ref_model_name_or_path: str = field(metadata={"help": "Reference model with the student's tokenizer."})
    dataset_name_or_path: str = field(metadata={"help": "Training documents (Hub id, folder or data file)."})
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    split: str = field(default="train", metadata={"help": "Split to train on."})
    text_column: str = field(default="text", metadata={"help": "Column holding the documents."})
    max_samples: int | None = field(default=None, metadata={"help": "Use only the first N documents."})
    seq_length: int = field(default=1024, metadata={"help": "Tokens per packed row."})
    reference_batch_size: int = field(default=8, metadata={"help": "Rows per reference forward pass."})


def main(script_args: ScriptArguments, training_args: SLMConfig):
    from hf_select import compute_reference_losses, pack_documents
    from hf_select.loading import load_any_dataset, load_causal_lm, load_tokenizer
    from hf_select.trainer_ext import SLMTrainer

    tokenizer = load_tokenizer(script_args.model_name_or_path)
    docs = load_any_dataset(script_args.dataset_name_or_path, script_args.split, script_args.dataset_config)
    if script_args.max_samples is not None:
        docs = docs.select(range(min(script_args.max_samples, len(docs))))

    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def tokenize_and_pack(batch):
        ids = tokenizer(batch[script_args.text_column], add_special_tokens=False).input_ids
        rows = pack_documents([bos + x + eos for x in ids], max_length=script_args.seq_length)
        rows.pop("num_documents")
        return rows

    rows = docs.map(tokenize_and_pack, batched=True, remove_columns=docs.column_names, desc="pack")

    ref_model = load_causal_lm(script_args.ref_model_name_or_path, device=training_args.device)
    rows = compute_reference_losses(
        rows, ref_model, batch_size=script_args.reference_batch_size, pad_token_id=tokenizer.pad_token_id or 0
    )
    del ref_model  # training needs no reference model: the rows carry ref_loss

    model = load_causal_lm(script_args.model_name_or_path).train()
    trainer = SLMTrainer(model=model, args=training_args, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(training_args.output_dir)
    return trainer


if __name__ == "__main__":
    parser = HfArgumentParser((ScriptArguments, SLMConfig))
    script_args, training_args = parser.parse_args_into_dataclasses()
    main(script_args, training_args)
