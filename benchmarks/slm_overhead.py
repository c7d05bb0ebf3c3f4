"""Step time of SLMTrainer against the plain Trainer: same model, same batch, one run.

    python benchmarks/slm_overhead.py [--steps 3] [--rounds 4] [--batch 8] [--seq 256] [--hidden 128] [--layers 4]

Three arms run round-robin (to share the machine's load fairly): the plain ``Trainer`` (causal-LM loss),
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
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

from hf_select.packing import PackedCollator
from hf_select.trainer_ext import SLMConfig, SLMTrainer


class StepTimer(TrainerCallback):
    """Wall time from one optimizer step's end to the next: includes fetching the batch and SLM's
    ``get_batch_samples`` (reference forward, selection), not only forward/backward."""

    def __init__(self):
        self.times, self._last = [], None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now


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


def arm(kind: str, args, student, data, ref, ref_losses, steps: int) -> list[float]:
    timer = StepTimer()
    common = dict(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch,
        max_steps=steps,
        learning_rate=1e-3,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    model = student()
    collator = PackedCollator(pad_columns=("ref_loss",) if kind == "precomputed" else ())
    if kind == "plain":
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**common),
            train_dataset=Dataset.from_dict(data),
            data_collator=collator,
            callbacks=[timer],
        )
    else:
        dataset = Dataset.from_dict({**data, "ref_loss": ref_losses} if kind == "precomputed" else data)
        trainer = SLMTrainer(
            model=model,
            args=SLMConfig(**common, select_scope="global"),
            ref_model=ref if kind == "online" else None,
            train_dataset=dataset,
            data_collator=collator,
            callbacks=[timer],
        )
    trainer.train()
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4)
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

    params = sum(p.numel() for p in student().parameters())
    times: dict[str, list[float]] = {"plain": [], "precomputed": [], "online": []}
    for _ in range(args.rounds):
        for kind in times:
            steps = arm(kind, args, student, data, ref, ref_losses, args.steps + args.warmup)
            times[kind] += steps[args.warmup :]
    median = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"model: llama {params / 1e6:.2f}M params (reference of equal size); batch {args.batch} x {args.seq} "
        f"tokens; {args.rounds} rounds x {args.steps} timed steps per arm; torch threads 2"
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
