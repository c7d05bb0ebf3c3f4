"""Step time of SLMTrainer against the plain Trainer: same model, same batch, one run.

    python benchmarks/slm_overhead.py [--steps 12] [--batch 8] [--seq 256] [--hidden 128] [--layers 4]

Three arms alternate step by step (so that the machine's load drifts hit all of them alike): the plain ``Trainer`` (causal-LM loss),
``SLMTrainer`` with a precomputed ``ref_loss`` column, and ``SLMTrainer`` with an online reference model of
the student's size. The median step time over the timed steps (after warm-up) is reported with the ratios to
the plain Trainer. Targets: precomputed <= 1.05x, online <= 1.45x.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from hf_select.packing import PackedCollator
from hf_select.trainer_ext import SLMConfig, SLMTrainer


def build_model(hidden: int, layers: int, vocab: int, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        use_cache=False,  # packed rows: lets transformers build the block-diagonal mask in every arm
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def rows(n: int, seq: int, vocab: int) -> dict[str, list]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (n, seq), generator=gen)
    half = seq // 2
    pos = torch.cat([torch.arange(half), torch.arange(seq - half)]).expand(n, seq)
    labels = ids.clone()
    labels[:, 0] = labels[:, half] = -100
    return {"input_ids": ids.tolist(), "labels": labels.tolist(), "position_ids": pos.tolist()}


def make_trainer(kind: str, args, model, data, ref, ref_losses) -> Trainer:
    common = dict(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch,
        max_steps=10**6,
        learning_rate=1e-3,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    collator = PackedCollator(pad_columns=("ref_loss",) if kind == "precomputed" else ())
    if kind == "plain":
        return Trainer(
            model=model,
            args=TrainingArguments(**common),
            train_dataset=Dataset.from_dict(data),
            data_collator=collator,
        )
    dataset = Dataset.from_dict({**data, "ref_loss": ref_losses} if kind == "precomputed" else data)
    return SLMTrainer(
        model=model,
        args=SLMConfig(**common, select_scope="global"),
        ref_model=ref if kind == "online" else None,
        train_dataset=dataset,
        data_collator=collator,
    )


def one_step(trainer: Trainer, loader) -> float:
    """What the Trainer's inner loop does for one optimizer step: fetch the batch(es) (SLM: reference and
    selection), forward, backward, optimizer step."""
    begin = time.perf_counter()
    batches, num_items = trainer.get_batch_samples(loader, 1, trainer.args.device)
    trainer.current_gradient_accumulation_steps = len(batches)
    for batch in batches:
        trainer.training_step(trainer.model, batch, num_items)
    trainer.optimizer.step()
    trainer.model.zero_grad()
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = rows(args.batch * (args.steps + args.warmup), args.seq, args.vocab)
    ref = build_model(args.hidden, args.layers, args.vocab, seed=1).eval()
    ref_losses = torch.rand(len(data["input_ids"]), args.seq).mul(8).tolist()

    def student():
        return build_model(args.hidden, args.layers, args.vocab, seed=0)

    trainers, loaders = {}, {}
    for kind in ("plain", "precomputed", "online"):
        trainers[kind] = make_trainer(kind, args, student(), data, ref, ref_losses)
        trainers[kind].create_optimizer_and_scheduler(num_training_steps=10**6)
        loaders[kind] = iter(trainers[kind].get_train_dataloader())
    params = sum(p.numel() for p in trainers["plain"].model.parameters())
    times: dict[str, list[float]] = {kind: [] for kind in trainers}
    for step in range(args.warmup + args.steps):  # arms alternate step by step: load drifts hit all alike
        for kind, trainer in trainers.items():
            seconds = one_step(trainer, loaders[kind])
            if step >= args.warmup:
                times[kind].append(seconds)
    median = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"model: llama {params / 1e6:.2f}M params (reference of equal size); batch {args.batch} x {args.seq} "
        f"tokens; {args.steps} timed steps per arm, arms interleaved step by step; torch threads 2"
    )
    print(f"{'arm':<28}{'median step (s)':>16}{'ratio':>8}{'target':>9}")
    targets = {"plain": "", "precomputed": "<=1.05", "online": "<=1.45"}
    names = {
        "plain": "Trainer (plain CLM)",
        "precomputed": "SLMTrainer, precomputed ref",
        "online": "SLMTrainer, online ref",
    }
    for kind, value in median.items():
        print(f"{names[kind]:<28}{value:>16.4f}{value / median['plain']:>7.3f}x{targets[kind]:>9}")


if __name__ == "__main__":
    main()
