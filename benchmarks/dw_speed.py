"""Data Whisperer speed on a real model (issue 19): seconds per group, one-at-a-time vs batched, in ONE run.

Pool: the demo's tier-stratified sample of ``world/finetune`` (``--per_tier`` per tier, answers cut to their first
sentence as the demo stage does; 20 per tier = 60 examples). Three measurements on the same pool and settings:

- ``before``: the implementation at ``--before_ref`` (git), loaded from its source: a separate attention
  forward per prompt plus an unbatched ``generate`` to a fixed budget (``n_queries x max_answer_tokens``), on the
  first ``--before_groups`` groups only (without retries: seconds per group attempt);
- ``alone``: this implementation with ``batch_prompts=1`` (one prompt per ``generate``, attention from its
  prefill, per-row stop, gold-based budget);
- ``batched``: this implementation with ``batch_prompts`` prompts per ``generate``, over the whole pool with
  retries -- seconds per group, invalid-group fraction and, with ``--finetune``, STR end to end (selection
  wall-clock / LoRA fine-tuning wall-clock on the full pool, same machine).

Run: ``python benchmarks/dw_speed.py --threads 2 [--finetune]``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_before(ref: str):
    """The Data Whisperer module at git ``ref``, importable next to the current package's core modules."""
    source = subprocess.run(
        ["git", "show", f"{ref}:hf_select/data_whisperer.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path("/tmp") / f"hf_select_dw_before_{ref}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(
        "hf_select._dw_before", path, submodule_search_locations=None
    )
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "hf_select"
    sys.modules["hf_select._dw_before"] = module
    spec.loader.exec_module(module)
    return module


def score_one_group(whisperer, questions, answers, demos, queries):
    """Score one group alone (one prompt, or one per query with ``query_mode="separate"``) through the scorer's
    own steps; None when a generation cannot be parsed (an invalid group)."""
    from hf_select.data_whisperer.scorer import _Attempt

    attempt = _Attempt(0, 0, 0, list(demos), list(queries), np.random.default_rng(0))
    attempt.prompts = whisperer._prompts(questions, answers, attempt)
    whisperer._generate_batch(attempt.prompts)
    return whisperer._finish(answers, attempt)


def uptime() -> str:
    """``uptime``'s line (the load averages: the machine may be shared)."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def build_pool(world: Path, per_tier: int, answer_chars: int, seed: int):
    from datasets import load_from_disk

    from hf_select.data_whisperer.experiment import short_answers, stratified_sample

    data = load_from_disk(str(world / "finetune"))
    train = short_answers(data["train"], answer_chars)
    return stratified_sample(train, per_tier, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / ".hf_select_cache/models/SmolLM2-135M-Instruct"))
    parser.add_argument("--world", default=str(ROOT / ".hf_select_cache/world"))
    parser.add_argument("--per_tier", type=int, default=20)
    parser.add_argument("--answer_chars", type=int, default=160)
    # None: the DataWhispererConfig default (the scorer's defaults are what is measured)
    parser.add_argument("--n_demos", type=int, default=None)
    parser.add_argument("--n_queries", type=int, default=None)
    parser.add_argument("--max_answer_tokens", type=int, default=None)
    parser.add_argument("--max_chars_per_field", type=int, default=None)
    parser.add_argument("--max_retries", type=int, default=None)
    parser.add_argument("--batch_prompts", type=int, default=None)
    parser.add_argument("--query_mode", default=None)
    parser.add_argument("--force_answer_format", type=lambda v: v.lower() in ("1", "true", "yes"), default=None)
    parser.add_argument("--before_ref", default="5b66d29")
    parser.add_argument("--before_groups", type=int, default=0)
    parser.add_argument("--alone_groups", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--finetune", action="store_true", help="also LoRA fine-tune on the full pool for STR"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from hf_select.data_whisperer import DataWhisperer, DataWhispererConfig
    from hf_select.loading import load_causal_lm, load_tokenizer

    defaults = DataWhispererConfig()
    for name in ("n_demos", "n_queries", "max_answer_tokens", "max_chars_per_field", "max_retries",
                 "batch_prompts", "query_mode", "force_answer_format"):  # fmt: skip
        if getattr(args, name) is None:
            setattr(args, name, getattr(defaults, name))

    model, tok = load_causal_lm(args.model), load_tokenizer(args.model)
    model.eval()
    pool = build_pool(Path(args.world), args.per_tier, args.answer_chars, args.seed)
    questions, answers = [str(q) for q in pool["question"]], [str(a) for a in pool["answer"]]
    common = dict(n_demos=args.n_demos, n_queries=args.n_queries, max_answer_tokens=args.max_answer_tokens,
                  max_chars_per_field=args.max_chars_per_field, query_mode=args.query_mode, seed=args.seed,
                  force_answer_format=args.force_answer_format)  # fmt: skip
    out: dict = {
        "pool": len(pool),
        "threads": args.threads,
        "settings": common,
        "model": Path(args.model).name,
    }

    # the groups of round 0 and their first query draw (same for every variant)
    new = DataWhisperer(model, tok, max_retries=0, batch_prompts=1, **common)
    groups = []
    for g, (demos, query_pool) in enumerate(new._groups(np.random.default_rng(args.seed), len(pool))):
        rng = np.random.default_rng([args.seed, 0, g])
        groups.append((demos, [int(j) for j in rng.choice(query_pool, args.n_queries, replace=False)]))

    if args.before_groups:
        before_module = load_before(args.before_ref)
        before = before_module.DataWhisperer(model, tok, max_retries=0, **common)
        before.attn_layer = new.attn_layer
        start, valid = time.perf_counter(), 0
        for demos, queries in groups[: args.before_groups]:
            with torch.no_grad():
                valid += before.score_group(questions, answers, demos, queries) is not None
        seconds = time.perf_counter() - start
        out["before"] = {"ref": args.before_ref, "groups": args.before_groups, "valid": valid,
                         "seconds_per_group": seconds / args.before_groups}  # fmt: skip
        print(json.dumps({"before": out["before"]}), flush=True)

    if args.alone_groups:
        start, valid = time.perf_counter(), 0
        for demos, queries in groups[: args.alone_groups]:
            valid += score_one_group(new, questions, answers, demos, queries) is not None
        seconds = time.perf_counter() - start
        out["alone"] = {"groups": args.alone_groups, "valid": valid,
                        "seconds_per_group": seconds / args.alone_groups}  # fmt: skip
        print(json.dumps({"alone": out["alone"]}), flush=True)

    batched = DataWhisperer(
        model, tok, max_retries=args.max_retries, batch_prompts=args.batch_prompts, **common
    )
    load_before_run = uptime()
    start, cpu_start = time.perf_counter(), time.process_time()
    scores = batched.score(pool)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    stats = batched.stats
    attempts = stats["groups"] + stats["retries"]
    out["batched"] = {
        "batch_prompts": args.batch_prompts, "seconds": seconds, "cpu_seconds": cpu, "stats": stats,
        "seconds_per_group": seconds / stats["groups"], "seconds_per_attempt": seconds / attempts,
        "cpu_seconds_per_group": cpu / stats["groups"],
        # first attempts that could not be parsed (each needed a retry), and groups still invalid after retries
        "invalid_attempt_fraction": stats["retries"] / attempts,
        "invalid_first_attempt_fraction": stats["retried_groups"] / stats["groups"],
        "invalid_group_fraction": stats["invalid_groups"] / stats["groups"],
        "uptime_before": load_before_run, "uptime_after": uptime(),
        "scored_examples": int(np.isfinite(scores).sum()),
        "unparsed_examples": batched.unparsed[:2], "answers_example": batched.groups[0].answers if batched.groups else None,
    }  # fmt: skip
    print(json.dumps({"batched": out["batched"]}, default=str), flush=True)
    if "before" in out:
        out["speedup_per_attempt_vs_before"] = (
            out["before"]["seconds_per_group"] / out["batched"]["seconds_per_attempt"]
        )
    if args.finetune:
        from hf_select.data_whisperer.finetune import FinetuneArguments, finetune

        ft_args = FinetuneArguments(
            output_dir="/tmp/dw_speed_ft", use_lora=True, num_train_epochs=2.0, learning_rate=3e-4,
            per_device_train_batch_size=4, max_length=128, save_strategy="no", report_to="none", use_cpu=True,
            seed=args.seed, disable_tqdm=True, logging_steps=50,
        )  # fmt: skip
        _, train_seconds = finetune(load_causal_lm(args.model), tok, pool, ft_args)
        out["full_finetune_seconds"] = train_seconds
        out["STR"] = seconds / train_seconds
    print(json.dumps(out, indent=1, default=str))
    b = out["batched"]
    print(
        f"invalid share: {b['invalid_first_attempt_fraction']:.1%} of groups at their first attempt, "
        f"{b['invalid_group_fraction']:.1%} after {args.max_retries} retries; "
        f"{b['seconds_per_group']:.2f} s per group ({b['cpu_seconds_per_group']:.2f} s CPU) on {args.threads} "
        f"threads; uptime: {b['uptime_after']}"
    )


if __name__ == "__main__":
    main()
