"""Wall-clock of the hf-select harness vs lm-evaluation-harness 0.4.13: same model, tasks, items and batch size,
one run, numbers compared side by side.

With ``--model PATH`` (e.g. ``.hf_select_cache/models/SmolLM2-135M-Instruct``) it evaluates the real
multiple-choice tasks of ``--tasks_dir`` (default: the demo world's ARC-Easy and HellaSwag, ``--items`` each)
and a GSM8K generation task built from the world's GSM8K records (the gold is the final number of the
reference answer, ``#### N``; greedy, until ``"Question:"`` / a blank line). Without ``--model`` it uses a small
random Llama on synthetic ARC-like items. Both harnesses are warmed up first; per task it prints both times,
the ratio, acc / acc_norm of both and the largest per-choice log-likelihood gap; for generation, how many
generations are identical strings and the exact match of both.

    python benchmarks/eval_vs_lm_eval.py --model .hf_select_cache/models/SmolLM2-135M-Instruct --items 100
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import time
from pathlib import Path

import torch

from hf_select.eval import evaluate, load_task
from hf_select.eval.lm_eval_adapter import run_lm_eval
from hf_select.testing import TINY_WORDS as WORDS
from hf_select.testing import tiny_tokenizer
from hf_select.text_metrics import exact_match


def compare_generations(ours: dict, theirs: dict, task) -> dict:
    """Compare the generations of a ``generate`` task: hf-select's :func:`hf_select.eval.evaluate` output (``log_samples``)
    vs :func:`hf_select.eval.run_lm_eval`'s (``log_samples``), item by item, graded with the same exact match.

    Returns ``{"num_items", "identical" (generations equal as strings), "exact_match" (ours),
    "lm_eval_exact_match" (lm-eval's own ``exact_match``), "exact_match_numeric" (ours, number-normalised),
    "lm_eval_exact_match_numeric" (the same grading of lm-eval's generations), "mismatches": [(doc_id, ours,
    theirs), ...]}``.
    """
    mine = {s["doc_id"]: s for s in ours["samples"][task.name]}
    identical, graded, mismatches = 0, [], []
    for sample in theirs["samples"].get(task.name, []):
        text = sample["filtered_resps"][0]
        text = text[0] if isinstance(text, list) else text
        own = mine[sample["doc_id"]]
        identical += own["prediction"] == text
        graded.append(exact_match(text, str(own["gold"])))
        if own["prediction"] != text:
            mismatches.append((sample["doc_id"], own["prediction"], text))
    if not graded:
        raise ValueError(f"lm-eval returned no samples for task {task.name!r} (run it with log_samples=True)")
    return {
        "num_items": len(graded),
        "identical": identical,
        "exact_match": ours["results"][task.name]["exact_match"],
        "lm_eval_exact_match": theirs["results"][task.name]["exact_match,none"],
        "exact_match_numeric": ours["results"][task.name]["exact_match_numeric"],
        "lm_eval_exact_match_numeric": sum(graded) / len(graded),
        "mismatches": mismatches,
    }


def write_synthetic_task(folder: Path, items: int, seed: int = 0) -> Path:
    rng = random.Random(seed)

    def record():
        query = "Question: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30))) + "?\nAnswer:"
        choices = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(4)]
        return {"query": query, "choices": choices, "gold": rng.randrange(4)}

    for split, n in (("test", items), ("train", 50)):
        (folder / f"bench.{split}.jsonl").write_text("".join(json.dumps(record()) + "\n" for _ in range(n)))
    (folder / "bench.yaml").write_text(
        "name: bench\ntype: multiple_choice\ndata_files:\n  test: bench.test.jsonl\n  train: bench.train.jsonl\n"
        "fewshot_split: train\nnum_fewshot: 3\n"
    )
    return folder / "bench.yaml"


def write_gsm8k_generation_task(source: Path, folder: Path, max_gen_toks: int) -> Path:
    """A ``generate`` task over GSM8K records whose gold is the reference's final number (``#### N``)."""
    records = []
    for line in source.read_text().splitlines():
        record = json.loads(line)
        answer = record["gold"]
        final = answer.split("####")[-1] if "####" in answer else re.findall(r"-?[\d,]*\.?\d+", answer)[-1]
        records.append({"query": record["query"], "gold": final.strip().replace(",", "")})
    (folder / "gsm8k_gen.test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    spec = {
        "name": "gsm8k_gen",
        "type": "generate",
        "data_files": {"test": "gsm8k_gen.test.jsonl"},
        "until": ["Question:", "\n\n"],
        "max_gen_toks": max_gen_toks,
    }
    (folder / "gsm8k_gen.json").write_text(json.dumps(spec))
    return folder / "gsm8k_gen.json"


def timed(fn):
    """``fn()``, its wall-clock seconds and this process's CPU seconds (fair on a machine shared with others)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - start, time.process_time() - cpu)


def _times(ours, theirs) -> str:
    return (
        f"wall hf-select {ours[0]:7.2f} s lm-eval {theirs[0]:7.2f} s ratio {theirs[0] / ours[0]:5.2f}x, "
        f"cpu {ours[1]:7.2f} s vs {theirs[1]:7.2f} s ratio {theirs[1] / ours[1]:5.2f}x"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Model folder; default: a random tiny Llama.")
    parser.add_argument("--tasks_dir", default=".hf_select_cache/world/eval_tasks")
    parser.add_argument("--tasks", nargs="+", default=["arc_easy", "hellaswag"])
    parser.add_argument("--items", type=int, default=100, help="Items per multiple-choice task.")
    parser.add_argument("--gen_items", type=int, default=16, help="GSM8K generation items (0: skip).")
    parser.add_argument("--max_gen_toks", type=int, default=48)
    parser.add_argument("--num_fewshot", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if args.model:
            from hf_select.loading import load_causal_lm, load_tokenizer

            tokenizer = load_tokenizer(args.model)
            model = load_causal_lm(args.model).to(args.device).eval()
            mc_tasks = [load_task(Path(args.tasks_dir) / f"{name}.yaml") for name in args.tasks]
            gen_tasks = []
            if args.gen_items:
                gsm = Path(args.tasks_dir) / "gsm8k.test.jsonl"
                gen_tasks = [load_task(write_gsm8k_generation_task(gsm, folder, args.max_gen_toks))]
        else:
            from transformers import LlamaConfig, LlamaForCausalLM

            tokenizer = tiny_tokenizer()
            config = LlamaConfig(
                vocab_size=320,
                hidden_size=256,
                intermediate_size=768,
                num_hidden_layers=4,
                num_attention_heads=8,
                num_key_value_heads=4,
                max_position_embeddings=2048,
                pad_token_id=0,
                bos_token_id=1,
                eos_token_id=2,
            )
            torch.manual_seed(0)
            model = LlamaForCausalLM(config).to(args.device).eval()
            mc_tasks, gen_tasks = [load_task(write_synthetic_task(folder, args.items))], []
        params = sum(p.numel() for p in model.parameters())
        print(
            f"model: {args.model or 'random Llama'} ({params / 1e6:.1f}M params) on {args.device}, "
            f"{torch.get_num_threads()} threads; batch size {args.batch_size}"
        )
        common = {"num_fewshot": args.num_fewshot, "batch_size": args.batch_size}
        evaluate(model, tokenizer, mc_tasks[:1], limit=4, show_progress=False, **common)  # warm-up
        run_lm_eval(model, tokenizer, mc_tasks[:1], limit=4, **common)

        total_ours, total_theirs = [0.0, 0.0], [0.0, 0.0]
        all_same = True
        for task in mc_tasks:
            ours, t_ours = timed(
                lambda task=task: evaluate(
                    model,
                    tokenizer,
                    [task],
                    limit=args.items,
                    log_samples=True,
                    show_progress=False,
                    **common,
                )
            )
            theirs, t_theirs = timed(
                lambda task=task: run_lm_eval(
                    model, tokenizer, [task], limit=args.items, log_samples=True, **common
                )
            )
            mine, ref = ours["results"][task.name], theirs["results"][task.name]
            by_doc = {s["doc_id"]: s["loglikelihoods"] for s in ours["samples"][task.name]}
            gap = max(
                abs(float(r[0]) - b)
                for s in theirs["samples"][task.name]
                for r, b in zip(s["filtered_resps"], by_doc[s["doc_id"]])
            )
            same = mine["acc"] == ref["acc,none"] and mine["acc_norm"] == ref["acc_norm,none"]
            all_same &= same
            for k in range(2):
                total_ours[k] += t_ours[k]
                total_theirs[k] += t_theirs[k]
            print(
                f"{task.name:10s} n={mine['num_items']}: {_times(t_ours, t_theirs)} | "
                f"acc {mine['acc']:.4f} vs {ref['acc,none']:.4f}  "
                f"acc_norm {mine['acc_norm']:.4f} vs {ref['acc_norm,none']:.4f}  max |loglik diff| {gap:.1e}"
                f"  identical: {same}"
            )
        print(
            f"multiple choice total: {_times(total_ours, total_theirs)}; identical acc/acc_norm on every "
            f"task: {all_same}"
        )
        for task in gen_tasks:
            ours, t_ours = timed(
                lambda task=task: evaluate(
                    model,
                    tokenizer,
                    [task],
                    limit=args.gen_items,
                    log_samples=True,
                    show_progress=False,
                    **common,
                )
            )
            theirs, t_theirs = timed(
                lambda task=task: run_lm_eval(
                    model, tokenizer, [task], limit=args.gen_items, log_samples=True, **common
                )
            )
            cmp = compare_generations(ours, theirs, task)
            print(
                f"{task.name} n={cmp['num_items']} (max_gen_toks {args.max_gen_toks}): "
                f"{_times(t_ours, t_theirs)} | identical generations "
                f"{cmp['identical']}/{cmp['num_items']}; exact match {cmp['exact_match']:.4f} vs lm-eval "
                f"{cmp['lm_eval_exact_match']:.4f}; number-normalised {cmp['exact_match_numeric']:.4f} vs "
                f"lm-eval's generations {cmp['lm_eval_exact_match_numeric']:.4f}"
            )
            for doc_id, mine, theirs_text in cmp["mismatches"][:3]:
                print(f"  doc {doc_id}: ours {mine!r}\n          lm-eval {theirs_text!r}")


if __name__ == "__main__":
    main()
