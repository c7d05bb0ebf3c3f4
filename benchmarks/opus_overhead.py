"""OPUS step-time overhead vs random selection at equal update tokens, against its cost floor (arXiv 2602.05400).

The paper reports ~4.7% overhead, which readers could not derive from its settings; we measure. A small Llama
(hidden 128, 4 layers; its block Linear layers have 16k-65k weights, so an 8192-dim sketch compresses them)
trains ``batch`` rows of ``seq`` tokens per step. Variants, run interleaved (A B C A B C ...) to share the
machine's noise:

- ``random``: a plain Trainer on the same rows;
- ``opus``: OPUSTrainer at its defaults (TensorSketch, statistics taken inside the scoring backward pass, exact
  AdamW preconditioner);
- ``opus_before``: the previous code path (factored grid sketch, every layer's inputs and output gradients
  kept until the backward ends, then sketched);
- ``opus_r1``: the factored grid sketch from the factors under the rank-one AdamW approximation
  (``sketch_rank_one_adamw``), the cheapest approximate variant;

each OPUS run scoring a buffer of ``2 x batch`` rows plus ``proxy`` proxy rows on ``window``-token windows.

The floor: scoring costs one forward and one activation-only backward (gradients w.r.t. the block Linear
outputs, no weight gradients) of the scoring tokens, so no implementation of the method can beat
``1 + scoring tokens / training tokens x (forward + activation-only backward) / (forward + full backward)``.
The two costs are measured in the same run on the training batch (CPU seconds). The script prints the floor,
every variant's measured ratio to random and the gap (measured / floor - 1), and, less sensitive to drift on
a shared machine, the ratio to its own training step (the same work as a random step) and that gap. Target:
gap <= 10%.

Also reports seconds per step (median over repeats), the training step alone, and the breakdown of the OPUS
scoring time: scoring forward/backward, sketch + inner products, selection. A second table times the scoring
alone (``opus_select`` on one buffer after one AdamW step), the variants interleaved call by call, which is far
less noisy on a shared machine than whole runs, with each variant's alignment error relative to exact inner
products.

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

from hf_select.opus.alignment import block_linear_layers, row_mean_losses
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


def model_kwargs(args) -> dict:
    """The timed Llama's config fields: :data:`MODEL`, with ``--vocab_size`` when given (the tiny default is 320,
    where the output layer costs next to nothing; a student's real vocabulary changes the floor)."""
    return {**MODEL, "vocab_size": args.vocab_size} if args.vocab_size else dict(MODEL)


VARIANT_OPTIONS = {
    "opus": {},
    "opus_before": {"sketch_kind": "factored", "sketch_in_backward": False, "exact_inner_product_elements": 0},
    "opus_r1": {"sketch_kind": "factored", "sketch_rank_one_adamw": True},
    "opus_exact": {"sketch_dim": None},
}


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
    model = tiny_model("llama", **model_kwargs(args)).train()
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
        options = dict(VARIANT_OPTIONS[name])
        trainer = OPUSTrainer(
            model=model,
            args=OPUSConfig(
                **common,
                sketch_dim=options.pop("sketch_dim", args.sketch_dim),
                score_window=args.window,
                proxy_batch_size=args.proxy,
                **options,
            ),
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


def scoring_calls(args, data, proxy, variants, calls=8):
    """Median CPU seconds of one ``opus_select`` per variant, interleaved call by call (robust to drift), and
    each variant's alignment error relative to exact inner products, on one buffer after one AdamW step."""
    import time

    names = [v for v in variants if v != "random"]
    if "opus_exact" not in names:
        names.append("opus_exact")
    trainers = {}
    for name in names:
        options = dict(VARIANT_OPTIONS[name])
        model = tiny_model("llama", **model_kwargs(args)).train()
        trainer = OPUSTrainer(
            model=model,
            args=OPUSConfig(
                output_dir="/tmp/opus_overhead_scoring",
                per_device_train_batch_size=args.batch,
                max_steps=1,
                use_cpu=True,
                report_to="none",
                remove_unused_columns=False,
                score_window=args.window,
                proxy_batch_size=args.proxy,
                sketch_dim=options.pop("sketch_dim", args.sketch_dim),
                **options,
            ),
            train_dataset=data,
            proxy_dataset=proxy,
        )
        trainer.create_optimizer()
        gen = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen) * 0.01
        trainer.optimizer.step()  # a non-trivial AdamW state: the elementwise preconditioner
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.state.global_step = 1
        trainer.opus_clock = time.process_time
        trainers[name] = trainer
    batch = trainers[names[0]].data_collator([data[i] for i in range(2 * args.batch)])
    seconds = {n: [] for n in names}
    for _ in range(calls):
        for name, trainer in trainers.items():
            t = time.process_time()
            trainer.opus_select(dict(batch))
            seconds[name].append(time.process_time() - t)
    exact = torch.tensor(trainers["opus_exact"].opus_history[-1]["alignment"])
    out = {}
    for name, trainer in trainers.items():
        hist = trainer.opus_history[1:]
        alignment = torch.tensor(trainer.opus_history[-1]["alignment"])
        out[name] = {
            "select": statistics.median(seconds[name][1:]),
            "sketch_and_inner_products": statistics.median(
                r["seconds"]["sketch_and_inner_products"] for r in hist
            ),
            "alignment_error": float((alignment - exact).norm() / exact.norm()),
        }
    return out


def pass_costs(args, data, repeats=5):
    """CPU seconds of (forward + full backward) and (forward + activation-only backward) on one training batch."""
    model = tiny_model("llama", **model_kwargs(args)).train()
    layers = block_linear_layers(model)
    rows = [data[i] for i in range(args.batch)]
    batch = PackedCollator()(rows)
    ids, labels, pos = batch["input_ids"], batch["labels"], batch["position_ids"]

    def full():
        sums, counts = row_mean_losses(model, ids, labels, pos)
        (sums.sum() / counts.sum()).backward()
        model.zero_grad(set_to_none=True)

    def activation_only():
        outputs = []
        handles = [lay.module.register_forward_hook(lambda _m, _a, out: outputs.append(out)) for lay in layers]
        try:
            sums, counts = row_mean_losses(model, ids, labels, pos)
            torch.autograd.grad(sums.sum() / counts.sum(), outputs)
        finally:
            for h in handles:
                h.remove()

    import time

    times = {"full": [], "activation_only": []}
    for _ in range(repeats):
        for key, fn in (("full", full), ("activation_only", activation_only)):
            t = time.process_time()
            fn()
            times[key].append(time.process_time() - t)
    return {k: statistics.median(v[1:]) for k, v in times.items()}


def floor_ratio(args, costs) -> tuple[float, float, float]:
    """(floor, scoring tokens / training tokens, activation-only / full cost ratio)."""
    scoring_tokens = (2 * args.batch + args.proxy) * args.window
    training_tokens = args.batch * args.seq
    token_ratio = scoring_tokens / training_tokens
    cost_ratio = costs["activation_only"] / costs["full"]
    return 1 + token_ratio * cost_ratio, token_ratio, cost_ratio


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--sketch_dim", type=int, default=8192)
    parser.add_argument("--proxy", type=int, default=8, help="proxy rows per step (OPUSConfig default 8)")
    parser.add_argument("--vocab_size", type=int, default=0, help="vocabulary of the timed model (0: the tiny 320)")
    parser.add_argument(
        "--variants", default="random,opus,opus_before,opus_r1", help="comma-separated (also: opus_exact)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="1 avoids OpenMP spin-waits on a shared machine"
    )
    args = parser.parse_args(argv)
    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    data = _rows(2 * args.batch * (args.steps + args.warmup) + 8, args.seq, 0)  # token ids < 320: any vocabulary
    proxy = _rows(32, args.seq, 1)
    variants = tuple(args.variants.split(","))
    if variants[0] != "random":
        raise SystemExit("the first variant must be random (the baseline)")
    times = {v: [] for v in variants}
    parts = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        pass_cost_runs = []
        for _ in range(args.repeats):
            pass_cost_runs.append(pass_costs(args, data))  # measured between the variants: same machine noise
            for v in variants:
                t, b = run_variant(v, args, data, proxy, tmp)
                times[v].append(t)
                parts[v].append(b)
    base = statistics.median(times["random"])
    costs = {k: statistics.median(c[k] for c in pass_cost_runs) for k in ("full", "activation_only")}
    floor, token_ratio, cost_ratio = floor_ratio(args, costs)
    print(
        f"OPUS overhead: llama hidden 128 x 4 layers, vocabulary {model_kwargs(args).get('vocab_size', 320)}, {args.batch} rows x {args.seq} tokens per step, buffer "
        f"{2 * args.batch} + {args.proxy} proxy rows, window {args.window}, sketch_dim {args.sketch_dim}, {args.steps} timed steps x "
        f"{args.repeats} interleaved repeats, {torch.get_num_threads()} threads, CPU seconds"
    )
    print(
        f"floor = 1 + scoring/training tokens {token_ratio:.3f} x (fwd + activation-only bwd {costs['activation_only']:.3f} s)"
        f" / (fwd + full bwd {costs['full']:.3f} s) = 1 + {token_ratio:.3f} x {cost_ratio:.3f} = {floor:.3f}"
    )
    print(
        f"{'variant':<15} {'s/step':>8} {'x random':>9} {'gap':>7} {'x own step':>11} {'gap own':>8} {'train step':>11} {'score fwd/bwd':>14} "
        f"{'sketch+ip':>10} {'select':>8}"
    )
    for v in variants:
        t = statistics.median(times[v])
        b = {
            k: statistics.median(p.get(k, 0.0) for p in parts[v])
            for k in ("train_step", "scoring_forward_backward", "sketch_and_inner_products", "selection")
        }
        own = t / b["train_step"]
        gap = "" if v == "random" else f"{t / base / floor - 1:+.1%}"
        gap_own = "" if v == "random" else f"{own / floor - 1:+.1%}"
        print(
            f"{v:<15} {t:>8.3f} {t / base:>9.3f} {gap:>7} {own:>11.3f} {gap_own:>8} {b['train_step']:>11.3f} {b['scoring_forward_backward']:>14.3f} "
            f"{b['sketch_and_inner_products']:>10.3f} {b['selection']:>8.4f}"
        )

    scoring = scoring_calls(args, data, proxy, variants)
    print("scoring alone, interleaved call by call (one buffer, after one AdamW step; CPU seconds per call):")
    print(f"{'variant':<15} {'opus_select':>12} {'sketch+ip':>10} {'alignment error vs exact':>25}")
    for name, r in scoring.items():
        print(
            f"{name:<15} {r['select']:>12.4f} {r['sketch_and_inner_products']:>10.4f} {r['alignment_error']:>25.4f}"
        )


if __name__ == "__main__":
    main()
