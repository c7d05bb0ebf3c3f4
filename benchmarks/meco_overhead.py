"""Step time of MeCo (``MeCoTrainer``) vs plain packed training (``Trainer`` + ``PackedCollator``), one run.

Both train the same model architecture on rows of ``--seq`` tokens with the same batch size and optimiser; the
plain run packs plain documents, the MeCo run the URL-conditioned schedule with its switch to plain documents.
A step's time is the wall time between consecutive ``on_step_end`` callbacks (data loading, forward, backward,
optimiser, logging). The two are interleaved in ``--rounds`` rounds of ``--steps`` steps (first ``--warmup``
steps of each round dropped) and compared by their medians. Preprocessing (tokenise + pack) is timed once.
Data: the demo world if present, else the fallback corpus of ``benchmarks/meco_demo.py`` (said so).

    python benchmarks/meco_overhead.py [--rounds 3 --steps 20 --batch 8 --seq 128]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

sys.path.insert(0, str(Path(__file__).parent))
from meco_demo import fresh_model, load_data

from hf_select.meco.metadata import add_metadata_tokens
from hf_select.packing import PackedCollator, pack_dataset_batch
from hf_select.trainer_ext import MeCoConfig, MeCoTrainer


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []
        self._last = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now


def arguments(out: Path, args, cls=TrainingArguments, **extra):
    return cls(
        output_dir=str(out),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=2e-3,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.01,
        logging_steps=args.steps,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        remove_unused_columns=False,
        **extra,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=".hf_select_cache")
    parser.add_argument("--out", default="/tmp/hf_select_meco_overhead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging

    logging.set_verbosity_error()
    disable_progress_bar()
    out = Path(args.out)
    tokenizer, config, train, _, what = load_data(
        Path(args.cache_dir), 0, 0, Path("/tmp/hf_select_meco_demo") / "fallback_corpus.json"
    )
    print(f"data: {what}")

    t = time.perf_counter()
    docs = add_metadata_tokens(train, tokenizer, metadata_column=None)
    plain_rows = docs.map(
        pack_dataset_batch,
        batched=True,
        batch_size=1000,
        remove_columns=docs.column_names,
        fn_kwargs={"max_length": args.seq},
    )
    plain_prep = time.perf_counter() - t
    collator = PackedCollator(tokenizer.pad_token_id)

    meco_args = arguments(out / "meco", args, MeCoConfig, max_length=args.seq, metadata_column="url")
    t = time.perf_counter()
    meco_probe = MeCoTrainer(
        fresh_model(config, 0), meco_args, train_dataset=train, processing_class=tokenizer
    )
    meco_prep = time.perf_counter() - t
    del meco_probe

    times = {"plain": [], "meco": []}
    for _ in range(args.rounds):
        for name in ("plain", "meco"):
            timer = StepTimer()
            if name == "plain":
                trainer = Trainer(
                    fresh_model(config, 0),
                    arguments(out / "plain", args),
                    train_dataset=plain_rows,
                    data_collator=collator,
                    callbacks=[timer],
                )
            else:
                trainer = MeCoTrainer(
                    fresh_model(config, 0),
                    meco_args,
                    train_dataset=train,
                    processing_class=tokenizer,
                    callbacks=[timer],
                )
            trainer.train()
            times[name] += timer.times[args.warmup :]
    plain, meco = statistics.median(times["plain"]), statistics.median(times["meco"])
    print(
        f"{args.rounds} interleaved rounds x {args.steps} steps (first {args.warmup} dropped), "
        f"batch {args.batch} x {args.seq} tokens, {args.threads} thread(s)"
    )
    print(f"median step time  plain packed: {plain * 1000:.1f} ms   MeCo: {meco * 1000:.1f} ms")
    print(f"MeCo / plain step time: {meco / plain:.3f}x (target <= 1.02x)")
    print(f"one-off preprocessing (tokenise + pack): plain {plain_prep:.2f}s, MeCo {meco_prep:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
