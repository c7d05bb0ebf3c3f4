"""Throughput of the hf-select harness vs lm-evaluation-harness 0.4.13: same model, tasks and batch size, one run.

Multiple-choice tasks with few-shot contexts (ARC-like: 4 choices, a shared prompt much longer than the
choices) on a small randomly initialised Llama. Both harnesses are warmed up first; acc / acc_norm of both
are printed next to the timings so the speed-up is not bought with different numbers.

    python benchmarks/eval_vs_lm_eval.py [--items 60] [--num_fewshot 3] [--batch_size 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_select.eval import evaluate, load_task
from hf_select.eval.lm_eval_adapter import run_lm_eval
from hf_select.testing import TINY_WORDS as WORDS
from hf_select.testing import tiny_tokenizer


def write_task(folder: Path, items: int, seed: int = 0) -> Path:
    rng = random.Random(seed)

    def record():
        query = "Question: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30))) + "?\nAnswer:"
        choices = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(4)]
        return {"query": query, "choices": choices, "gold": rng.randrange(4)}

    for split, n in (("test", items), ("train", 50)):
        (folder / f"bench.{split}.jsonl").write_text("".join(json.dumps(record()) + "\n" for _ in range(n)))
    (folder / "bench.yaml").write_text(
        "name: bench\ntype: multiple_choice\ndata_files:\n  test: bench.test.jsonl\n  train: bench.train.jsonl\n"
        "fewshot_split: train\n"
    )
    return folder / "bench.yaml"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--num_fewshot", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=320,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(args.device).eval()
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as folder:
        task = load_task(write_task(Path(folder), args.items))
        common = {"num_fewshot": args.num_fewshot, "batch_size": args.batch_size}
        evaluate(model, tokenizer, [task], limit=4, show_progress=False, **common)  # warm-up
        run_lm_eval(model, tokenizer, [task], limit=4, **common)

        start = time.perf_counter()
        ours = evaluate(model, tokenizer, [task], show_progress=False, **common)["results"]["bench"]
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        theirs = run_lm_eval(model, tokenizer, [task], **common)["results"]["bench"]
        t_theirs = time.perf_counter() - start

    n = args.items
    print(
        f"model: Llama {params / 1e6:.1f}M params on {args.device}; task: {n} items x 4 choices, "
        f"{args.num_fewshot}-shot; batch size {args.batch_size}"
    )
    print(
        f"hf-select : {t_ours:7.2f} s  ({n / t_ours:7.2f} items/s)  acc {ours['acc']:.4f}  acc_norm {ours['acc_norm']:.4f}"
    )
    print(
        f"lm-eval   : {t_theirs:7.2f} s  ({n / t_theirs:7.2f} items/s)  acc {theirs['acc,none']:.4f}  "
        f"acc_norm {theirs['acc_norm,none']:.4f}"
    )
    same = ours["acc"] == theirs["acc,none"] and ours["acc_norm"] == theirs["acc_norm,none"]
    print(f"throughput ratio (hf-select / lm-eval): {t_theirs / t_ours:.2f}x; identical acc/acc_norm: {same}")


if __name__ == "__main__":
    main()
