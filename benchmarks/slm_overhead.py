"""Step time of SLMTrainer against the plain Trainer: same model, same batch, one run.

    python benchmarks/slm_overhead.py [--steps 12] [--batch 8] [--seq 256] [--hidden 128] [--layers 4]

Three arms alternate step by step (so that the machine's load drifts hit all of them alike): the plain ``Trainer`` (causal-LM loss),
``SLMTrainer`` with a precomputed ``ref_loss`` column, and ``SLMTrainer`` with an online reference model of
the student's size. The median step time over the timed steps (after warm-up) is reported with the ratios to
the plain Trainer, in wall-clock and in this process's CPU time (the fairer one on a shared machine).
Targets: precomputed <= 1.03x, online <= 1.45x. ``--grad_accum 2`` shows the cost of the "global" scope's
ranking forward when a step has several micro-batches: the excess loss must rank all the step's tokens
before the first backward, so each micro-batch gets one extra no-grad student forward (about +1/3 of a
forward + backward). The exact cheaper alternative is the same step as one micro-batch (per-device batch x
accumulation steps, gradient accumulation 1): SLM normalises by the step's selected count, so the update is
the same, and the ranking reuses the training forward. Scores that need no student (``reference_entropy``)
pay nothing.
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
        gradient_accumulation_steps=args.grad_accum,
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
        args=SLMConfig(**common, select_scope=args.scope),
        ref_model=ref if kind == "online" else None,
        train_dataset=dataset,
        data_collator=collator,
    )


def one_step(trainer: Trainer, loader) -> tuple[float, float]:
    """What the Trainer's inner loop does for one optimizer step: fetch the batch(es) (SLM: reference and
    selection), forward, backward, optimizer step. Returns (wall, this process's CPU) seconds."""
    begin, cpu = time.perf_counter(), time.process_time()
    batches, num_items = trainer.get_batch_samples(
        loader, trainer.args.gradient_accumulation_steps, trainer.args.device
    )
    trainer.current_gradient_accumulation_steps = len(batches)
    for batch in batches:
        trainer.training_step(trainer.model, batch, num_items)
    trainer.optimizer.step()
    trainer.model.zero_grad()
    return time.perf_counter() - begin, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--grad_accum", type=int, default=1, help="Micro-batches per optimizer step.")
    parser.add_argument("--scope", default="global", choices=["global", "sequence", "microbatch"])
    parser.add_argument(
        "--threads", type=int, default=None, help="Default: this process's share of the cores."
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        from hf_select.threads import set_torch_threads

        set_torch_threads()
    data = rows(args.batch * args.grad_accum * (args.steps + args.warmup), args.seq, args.vocab)
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
    times: dict[str, list[tuple[float, float]]] = {kind: [] for kind in trainers}
    for step in range(args.warmup + args.steps):  # arms alternate step by step: load drifts hit all alike
        for kind, trainer in trainers.items():
            seconds = one_step(trainer, loaders[kind])
            if step >= args.warmup:
                times[kind].append(seconds)
    median = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    median_cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    print(
        f"model: llama {params / 1e6:.2f}M params (reference of equal size); batch {args.batch} x {args.seq} "
        f"tokens x {args.grad_accum} micro-batch(es) per step; scope {args.scope!r}; {args.steps} timed steps "
        f"per arm, arms interleaved step by step; torch threads {torch.get_num_threads()}"
    )
    print(f"{'arm':<28}{'median step (s)':>16}{'ratio':>8}{'cpu (s)':>9}{'ratio':>8}{'target':>9}")
    targets = {"plain": "", "precomputed": "<=1.03", "online": "<=1.45"}
    names = {
        "plain": "Trainer (plain CLM)",
        "precomputed": "SLMTrainer, precomputed ref",
        "online": "SLMTrainer, online ref",
    }
    for kind, value in median.items():
        cpu = median_cpu[kind]
        print(
            f"{names[kind]:<28}{value:>16.4f}{value / median['plain']:>7.3f}x{cpu:>9.4f}"
            f"{cpu / median_cpu['plain']:>7.3f}x{targets[kind]:>9}"
        )


if __name__ == "__main__":
    main()
