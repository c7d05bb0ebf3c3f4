"""OPUS step-time overhead vs random selection at equal update tokens (arXiv 2602.05400).

The paper reports ~4.7% overhead, which readers could not derive from its settings; we measure. A small Llama
(hidden 128, 4 layers; its block Linear layers have 16k-65k weights, so an 8192-dim sketch compresses them)
trains ``batch`` rows of ``seq`` tokens per step. Variants, run interleaved (A B C A B C ...) to share the
machine's noise: random (plain Trainer), OPUS exact inner products, OPUS with the CountSketch (exact AdamW
preconditioner: dense per-sample matrices, then sketched), OPUS with the CountSketch taken from the factors
under the rank-one AdamW approximation (``sketch_rank_one_adamw``), each OPUS run
scoring a buffer of ``2 x batch`` rows on ``window``-token windows. Reports seconds per step (median over
repeats), the ratio to random, the training step alone, and the breakdown of the OPUS scoring time: scoring forward/backward, sketch +
inner products, selection. Target: <= 1.25x.

Run: ``.venv/bin/python benchmarks/opus_overhead.py [--steps 12 --repeats 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments
from transformers.utils import logging

from hf_select.packing import PackedCollator
from hf_select.testing import tiny_model
from hf_select.trainer_ext import OPUSConfig, OPUSTrainer

MODEL = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=1024,
)


def _rows(n, seq, seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 320, (n, seq), generator=gen).tolist()
    return Dataset.from_dict(
        {"input_ids": ids, "labels": [[-100, *r[1:]] for r in ids], "position_ids": [list(range(seq))] * n}
    )


def run_variant(name, args, data, proxy, tmp):
    common = dict(
        output_dir=f"{tmp}/{name}",
        per_device_train_batch_size=args.batch,
        max_steps=args.steps + args.warmup,
        learning_rate=1e-3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        remove_unused_columns=False,
        disable_tqdm=True,
        logging_steps=10_000,
        dataloader_num_workers=0,
    )
    model = tiny_model("llama", **MODEL).train()
    step_times = []
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            import time

            self.t = time.process_time()

        def on_step_end(self, a, state, control, **kw):
            import time

            if state.global_step > args.warmup:
                step_times.append(time.process_time() - self.t)

    if name == "random":
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**common),
            train_dataset=data,
            data_collator=PackedCollator(),
            callbacks=[Clock()],
        )
    else:
        sketch = None if name == "opus_exact" else args.sketch_dim
        trainer = OPUSTrainer(
            model=model,
            args=OPUSConfig(**common, sketch_dim=sketch, score_window=args.window),
            train_dataset=data,
            proxy_dataset=proxy,
            callbacks=[Clock()],
        )
    # the candidate buffer is loaded and scored in get_batch_samples, before on_step_begin: time it too
    import time

    scoring = []
    if name != "random":
        original = trainer.get_batch_samples

        def timed(*a, **kw):
            t = time.process_time()
            out = original(*a, **kw)
            scoring.append(time.process_time() - t)
            return out

        trainer.get_batch_samples = timed
        trainer.opus_clock = time.process_time
    trainer.train()
    train_step = statistics.median(step_times)
    per_step = train_step + (statistics.median(scoring[args.warmup :]) if scoring else 0.0)
    timed_steps = getattr(trainer, "opus_history", [])[args.warmup :]
    breakdown = {
        k: statistics.median(r["seconds"][k] for r in timed_steps)
        for k in ("scoring_forward_backward", "sketch_and_inner_products", "selection")
        if timed_steps
    }
    breakdown["train_step"] = train_step
    return per_step, breakdown


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--sketch_dim", type=int, default=8192)
    parser.add_argument(
        "--threads", type=int, default=1, help="1 avoids OpenMP spin-waits on a shared machine"
    )
    args = parser.parse_args(argv)
    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    data = _rows(2 * args.batch * (args.steps + args.warmup) + 8, args.seq, 0)
    proxy = _rows(32, args.seq, 1)
    variants = ("random", "opus_exact", "opus_sketch", "opus_sketch_r1")
    times = {v: [] for v in variants}
    parts = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for v in variants:
                t, b = run_variant(v, args, data, proxy, tmp)
                times[v].append(t)
                parts[v].append(b)
    base = statistics.median(times["random"])
    print(
        f"OPUS overhead: llama hidden 128 x 4 layers, {args.batch} rows x {args.seq} tokens per step, buffer "
        f"{2 * args.batch}, window {args.window}, sketch_dim {args.sketch_dim}, {args.steps} timed steps x "
        f"{args.repeats} interleaved repeats, {torch.get_num_threads()} threads, CPU seconds"
    )
    print(
        f"{'variant':<15} {'s/step':>8} {'x random':>9} {'x own step':>11} {'train step':>11} {'score fwd/bwd':>14} "
        f"{'sketch+ip':>10} {'select':>8}"
    )
    for v in variants:
        t = statistics.median(times[v])
        b = {
            k: statistics.median(p.get(k, 0.0) for p in parts[v])
            for k in ("train_step", "scoring_forward_backward", "sketch_and_inner_products", "selection")
        }
        print(
            f"{v:<15} {t:>8.3f} {t / base:>9.2f} {t / b['train_step']:>11.2f} {b['train_step']:>11.3f} {b['scoring_forward_backward']:>14.3f} "
            f"{b['sketch_and_inner_products']:>10.3f} {b['selection']:>8.4f}"
        )


if __name__ == "__main__":
    main()
