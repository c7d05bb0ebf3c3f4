"""OPUS vs random selection on a pool that is half noise, at equal update tokens (arXiv 2602.05400).

Clean documents come from a fixed low-entropy Markov chain over the token vocabulary (learnable); noise
documents are uniform random tokens (unlearnable). The proxy set and the held-out set are fresh clean
documents. Both runs train the same tiny Llama from the same initialisation for the same steps on
``batch`` rows of ``seq`` tokens per step: random selection trains on the first ``batch`` rows of each
shuffled buffer (a plain Trainer), OPUS scores a buffer of ``2 x batch`` rows and keeps ``batch``.

Prints held-out and proxy loss curves and the noise share of the trained rows.
Run: ``.venv/bin/python benchmarks/opus_noise.py [--steps 60]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging

from hf_select.packing import PackedCollator
from hf_select.testing import tiny_model
from hf_select.token_loss import per_token_loss
from hf_select.trainer_ext import OPUSConfig, OPUSTrainer

VOCAB = 320


def markov_docs(n: int, length: int, seed: int, transitions: torch.Tensor) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    docs = []
    for _ in range(n):
        tok = int(torch.randint(4, VOCAB, (1,), generator=gen))
        doc = [tok]
        for _ in range(length - 1):
            tok = int(transitions[tok][torch.randint(transitions.shape[1], (1,), generator=gen)])
            doc.append(tok)
        docs.append(doc)
    return docs


def noise_docs(n: int, length: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(4, VOCAB, (n, length), generator=gen).tolist()


def rows(docs: list[list[int]], domain: str | None = None) -> Dataset:
    data = {
        "input_ids": docs,
        "labels": [[-100, *d[1:]] for d in docs],
        "position_ids": [list(range(len(d))) for d in docs],
    }
    if domain is not None:
        data["domain"] = [domain] * len(docs)
    return Dataset.from_dict(data)


def mean_loss(model, docs: list[list[int]]) -> float:
    ids = torch.tensor(docs)
    was = model.training
    model.eval()
    losses, mask = per_token_loss(model, ids)
    model.train(was)
    return float(losses[mask].mean())


class DomainCountingCollator(PackedCollator):
    """PackedCollator that records the ``domain`` of every collated row (for the random baseline)."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __call__(self, features):
        self.seen += [f["domain"] for f in features]
        return super().__call__([{k: v for k, v in f.items() if k != "domain"} for f in features])


class LossCurve(TrainerCallback):
    def __init__(self, heldout, proxy, every):
        self.heldout, self.proxy, self.every, self.points = heldout, proxy, every, []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self.points.append(
                (state.global_step, mean_loss(model, self.heldout), mean_loss(model, self.proxy))
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--pool", type=int, default=640, help="pool documents (half noise)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.set_verbosity_error()
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(123)
    transitions = torch.randint(4, VOCAB, (VOCAB, 3), generator=gen)  # 3 possible successors per token
    half = args.pool // 2
    clean = rows(markov_docs(half, args.seq, 1, transitions), "clean")
    noise = rows(noise_docs(half, args.seq, 2), "noise")
    from datasets import concatenate_datasets

    pool = concatenate_datasets([clean, noise]).shuffle(seed=args.seed)
    proxy_docs = markov_docs(64, args.seq, 3, transitions)
    heldout_docs = markov_docs(64, args.seq, 4, transitions)
    common = dict(
        per_device_train_batch_size=args.batch,
        max_steps=args.steps,
        learning_rate=3e-3,
        warmup_steps=0.05,
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        logging_steps=max(1, args.steps // 6),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=args.seed,
        data_seed=args.seed,
        remove_unused_columns=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    every = max(1, args.steps // 6)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("random", "opus"):
            model = tiny_model("llama", seed=args.seed).train()
            curve = LossCurve(heldout_docs, proxy_docs, every)
            start = time.perf_counter()
            if name == "random":
                collator = DomainCountingCollator()
                trainer = Trainer(
                    model=model,
                    args=TrainingArguments(output_dir=f"{tmp}/{name}", **common),
                    train_dataset=pool,
                    data_collator=collator,
                    callbacks=[curve],
                )
            else:
                trainer = OPUSTrainer(
                    model=model,
                    args=OPUSConfig(
                        output_dir=f"{tmp}/{name}", score_window=args.seq, sketch_dim=8192, **common
                    ),
                    train_dataset=pool,
                    proxy_dataset=rows(proxy_docs),
                    callbacks=[curve],
                )
            trainer.train()
            seconds = time.perf_counter() - start
            if name == "opus":
                picked = [d for r in trainer.opus_history for d in r["selected_domains"]]
            else:
                picked = collator.seen[: args.steps * args.batch]
            noise_share = picked.count("noise") / len(picked)
            results[name] = (curve.points, noise_share, seconds)
    print(
        f"OPUS noise benchmark: pool {args.pool} docs (50% noise), {args.steps} steps x {args.batch} rows x "
        f"{args.seq} tokens, OPUS buffer {2 * args.batch}, equal update tokens"
    )
    print(f"{'step':>6} {'random heldout':>15} {'opus heldout':>13} {'random proxy':>13} {'opus proxy':>11}")
    for (s, rh, rp), (_, oh, op) in zip(results["random"][0], results["opus"][0]):
        print(f"{s:>6} {rh:>15.4f} {oh:>13.4f} {rp:>13.4f} {op:>11.4f}")
    print(f"noise share of trained rows: random {results['random'][1]:.3f}, opus {results['opus'][1]:.3f}")
    r_final, o_final = results["random"][0][-1][1], results["opus"][0][-1][1]
    print(f"final held-out loss: random {r_final:.4f}, opus {o_final:.4f} (delta {o_final - r_final:+.4f})")
    print(f"wall time: random {results['random'][2]:.1f}s, opus {results['opus'][2]:.1f}s")


if __name__ == "__main__":
    main()
