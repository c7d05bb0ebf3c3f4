"""One GPU check of hf-select, for the day a device is lent: every figure measured in one run, targets beside them.

    python benchmarks/gpu_check.py                          # CUDA, bfloat16, sdpa; at most ~8 minutes on one GPU
    python benchmarks/gpu_check.py --device cpu --tiny      # the same code paths on a tiny model (CI, ~1 min)

Sections (each prints its figures and its target; ``--json`` writes them all):

1. AttentionInfluence scoring, tokens/s and docs/s at 512 and 2,048 tokens per document, for SmolLM2-135M
   (the local ``.hf_select_cache/models/SmolLM2-135M-Instruct`` when present, else its config with random
   weights) and a 1B Llama config (random weights: speed does not depend on them), against a plain forward
   (per-token losses) of the same documents in the same run. Targets: scorer time <= (1 + share of layers at or
   above the lowest masked layer) x plain + 10%; for the 135M selector the compute-bound ceiling on an
   H100/H200 is about 0.5-1M scored tokens/s, and the measured share of it is printed.
2. Step overheads: ``SLMTrainer`` (precomputed reference) and ``OPUSTrainer`` (AdamW, defaults) against a plain
   ``Trainer`` step on the same model and batch (median seconds between step ends). Targets: SLM <= 1.03x
   (benchmarks/slm_overhead.py); OPUS: the paper reports ~1.05x (benchmarks/opus_overhead.py has the floor).
3. Harness speed against lm-eval on one multiple-choice task (benchmarks/eval_vs_lm_eval.py, same items).
   Target: hf-select's harness no slower than lm-eval, identical accuracies.
4. Data Whisperer seconds per group (one generation of ``n_demos + n_queries`` examples plus one attention
   forward). Target: bounded by one generation of ``max_answer_tokens`` tokens per group.

Nothing here is asserted: the figures are for reading (``tests/benchmarks/test_gpu_check.py`` runs ``--tiny`` on
CPU so that the script cannot rot).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SMOLLM = ROOT / ".hf_select_cache" / "models" / "SmolLM2-135M-Instruct"
CEILING_135M = (0.5e6, 1.0e6)  # scored tokens/s, compute-bound, H100/H200 (issue 25)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _llama(config_kwargs: dict, dtype: torch.dtype, device: torch.device, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**config_kwargs)
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()


SMOLLM_CONFIG = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True,
)  # fmt: skip
LLAMA_1B_CONFIG = dict(
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
    num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=True,
)  # fmt: skip
TINY_CONFIG = dict(
    vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)  # fmt: skip


def models(args, dtype, device):
    """``(name, model)`` pairs of section 1."""
    if args.tiny:
        return [("tiny Llama (random)", _llama(TINY_CONFIG, dtype, device))]
    out = []
    if SMOLLM.is_dir():
        from hf_select.loading import load_causal_lm

        model = load_causal_lm(str(SMOLLM), dtype=dtype, attn_implementation="sdpa").to(device).eval()
        out.append(("SmolLM2-135M-Instruct", model))
    else:
        out.append(("SmolLM2-135M config (random)", _llama(SMOLLM_CONFIG, dtype, device)))
    out.append(("Llama 1B config (random)", _llama(LLAMA_1B_CONFIG, dtype, device)))
    return out


class _TokenIds:
    """Stands in for a tokenizer when documents are given as token ids."""

    pad_token_id = 0

    def __len__(self) -> int:
        return 0


def _heads(model, count: int = 8) -> list[tuple[int, int]]:
    """``count`` heads spread over the upper two thirds of the layers (speed depends on how many heads and on
    the lowest masked layer, not on which)."""
    from hf_select.model_adapter import get_model_adapter

    adapter = get_model_adapter(model)
    first = adapter.num_layers // 3
    pairs = [(layer, head) for layer in range(first, adapter.num_layers) for head in range(adapter.num_heads)]
    return pairs[:: max(1, len(pairs) // count)][:count]


def attention_influence_section(args, dtype, device, results: dict) -> None:
    from hf_select.attention_influence import AttentionInfluence
    from hf_select.model_adapter import get_model_adapter
    from hf_select.token_loss import per_token_loss

    print("\n== 1. AttentionInfluence scoring vs a plain forward (same documents, same run)")
    lengths = (32, 64) if args.tiny else (512, 2048)
    for name, model in models(args, dtype, device):
        heads = _heads(model)
        layers = get_model_adapter(model).num_layers
        upper_share = (layers - min(layer for layer, _ in heads)) / layers
        bound = (1 + upper_share) * 1.10
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params / 1e6:.0f}M params, {dtype}, sdpa, {len(heads)} masked heads")
        for length in lengths:
            tokens_per_batch = 4 * length if args.tiny else 16384
            batch = max(1, tokens_per_batch // length)
            docs = batch * (2 if args.tiny else 8)
            gen = torch.Generator().manual_seed(length)
            ids = torch.randint(10, model.config.vocab_size, (docs, length), generator=gen)
            scorer = AttentionInfluence(model, _TokenIds(), heads, max_length=length, batch_size=batch)
            scorer.score_token_ids(ids[:batch].tolist())  # warm-up: kernels, allocator
            with torch.no_grad():
                per_token_loss(model, ids[:batch].to(device))
            _sync(device)
            start = time.perf_counter()
            with torch.no_grad():
                for s in range(0, docs, batch):
                    per_token_loss(model, ids[s : s + batch].to(device))
            _sync(device)
            plain = time.perf_counter() - start
            start = time.perf_counter()
            scorer.score_token_ids(ids.tolist())
            _sync(device)
            scored = time.perf_counter() - start
            tokens = docs * length
            row = {
                "model": name,
                "length": length,
                "docs_per_s": docs / scored,
                "tokens_per_s": tokens / scored,
                "plain_tokens_per_s": tokens / plain,
                "ratio_to_plain": scored / plain,
                "target_ratio": bound,
            }
            line = (
                f"  {length:>5} tokens: {row['docs_per_s']:9.1f} docs/s {row['tokens_per_s']:11.0f} tokens/s | "
                f"plain forward {row['plain_tokens_per_s']:11.0f} tokens/s | scorer/plain {row['ratio_to_plain']:.2f}x "
                f"(target <= {bound:.2f}x)"
            )
            if "135M" in name and device.type == "cuda":
                low, high = (row["tokens_per_s"] / c for c in CEILING_135M)
                row["share_of_ceiling"] = [high, low]
                line += f" | {100 * high:.0f}-{100 * low:.0f}% of the 0.5-1M tokens/s ceiling"
            print(line, flush=True)
            results.setdefault("attention_influence", []).append(row)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _step_times(trainer, steps: int, warmup: int) -> float:
    from transformers import TrainerCallback

    ends: list[float] = []
    device = trainer.args.device

    class Clock(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            _sync(device)
            ends.append(time.perf_counter())

    trainer.add_callback(Clock())
    trainer.train()
    gaps = [b - a for a, b in zip(ends[warmup - 1 :], ends[warmup:])]
    return statistics.median(gaps)


def step_overhead_section(args, dtype, device, results: dict, workdir: Path) -> None:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from hf_select.packing import PackedCollator
    from hf_select.trainer_ext import OPUSConfig, OPUSTrainer, SLMConfig, SLMTrainer

    print("\n== 2. SLM and OPUS step time vs a plain Trainer step (same model and batch)")
    seq, batch = (32, 4) if args.tiny else (1024, 8)
    steps, warmup = (4, 1) if args.tiny else (12, 3)
    config = TINY_CONFIG if args.tiny else SMOLLM_CONFIG
    gen = torch.Generator().manual_seed(0)
    rows = 4 * batch * (steps + 1)
    ids = torch.randint(10, config["vocab_size"], (rows, seq), generator=gen).tolist()
    data = Dataset.from_dict({"input_ids": ids, "labels": ids, "position_ids": [list(range(seq))] * rows})
    with_ref = data.add_column("ref_loss", [[2.0] * seq] * rows)
    common = dict(
        per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-4, report_to="none",
        save_strategy="no", disable_tqdm=True, logging_strategy="no", use_cpu=device.type == "cpu",
        bf16=dtype == torch.bfloat16 and device.type == "cuda", remove_unused_columns=False, seed=0,
        dataloader_drop_last=True,
    )  # fmt: skip
    collator = PackedCollator(pad_token_id=0)
    arms = {
        "plain Trainer": lambda m, d: Trainer(
            model=m, args=TrainingArguments(output_dir=str(d), **common), train_dataset=data, data_collator=collator
        ),
        "SLMTrainer (precomputed reference)": lambda m, d: SLMTrainer(
            model=m, args=SLMConfig(output_dir=str(d), **common), train_dataset=with_ref
        ),
        "OPUSTrainer (AdamW, defaults)": lambda m, d: OPUSTrainer(
            model=m, args=OPUSConfig(output_dir=str(d), **common), train_dataset=data, proxy_dataset=data
        ),
    }
    seconds = {}
    for name, build in arms.items():
        model = _llama(config, torch.float32, device).train()  # the Trainer's bf16 is autocast over fp32 weights
        seconds[name] = _step_times(build(model, workdir / name.split()[0]), steps, warmup)
        del model
    plain = seconds["plain Trainer"]
    targets = {"SLMTrainer (precomputed reference)": "<= 1.03x", "OPUSTrainer (AdamW, defaults)": "~1.05x (paper)"}
    for name, value in seconds.items():
        ratio = value / plain
        print(f"  {name:36s} {value * 1000:9.1f} ms/step  {ratio:5.2f}x  target {targets.get(name, '1x')}")
        results.setdefault("steps", []).append({"arm": name, "seconds": value, "ratio": ratio})


def harness_section(args, device, results: dict) -> None:
    print("\n== 3. hf-select harness vs lm-eval on one task")
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        print("  skipped: lm-eval is not installed (pip install 'hf-select[lm-eval]')")
        results["harness"] = "skipped: no lm-eval"
        return
    cmd = [sys.executable, str(ROOT / "benchmarks" / "eval_vs_lm_eval.py"), "--device", str(device)]
    tasks_dir = ROOT / ".hf_select_cache" / "world" / "eval_tasks"
    if args.tiny:
        cmd += ["--items", "8", "--gen_items", "0", "--batch_size", "4"]
    elif SMOLLM.is_dir() and (tasks_dir / "arc_easy.yaml").exists():
        cmd += ["--model", str(SMOLLM), "--tasks_dir", str(tasks_dir), "--tasks", "arc_easy", "--items", "500"]
        cmd += ["--gen_items", "0", "--batch_size", "32"]
    else:
        cmd += ["--items", "500", "--gen_items", "0", "--batch_size", "32"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    for line in lines:
        print("  " + line)
    if done.returncode != 0:
        print("  failed: " + done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "  failed")
    results["harness"] = lines
    print("  target: hf-select's time <= lm-eval's, identical acc / acc_norm")


def data_whisperer_section(args, dtype, device, results: dict) -> None:
    from datasets import Dataset

    from hf_select.data_whisperer import DataWhisperer
    from hf_select.testing import TINY_WORDS, tiny_tokenizer

    print("\n== 4. Data Whisperer seconds per group")
    if args.tiny or not SMOLLM.is_dir():
        tokenizer = tiny_tokenizer() if args.tiny else None
        if tokenizer is None:
            print("  skipped: needs the SmolLM2 tokenizer (.hf_select_cache/models/SmolLM2-135M-Instruct)")
            results["data_whisperer"] = "skipped: no tokenizer"
            return
        model, chat = _llama(TINY_CONFIG, dtype, device), False
    else:
        from hf_select.loading import load_causal_lm, load_tokenizer

        tokenizer = load_tokenizer(str(SMOLLM))
        model = load_causal_lm(str(SMOLLM), dtype=dtype, attn_implementation="sdpa").to(device).eval()
        chat = True
    words = list(TINY_WORDS)
    n = 16 if args.tiny else 64
    gen = torch.Generator().manual_seed(0)

    def text(k):
        return " ".join(words[int(i)] for i in torch.randint(len(words), (k,), generator=gen))

    pool = Dataset.from_dict({"question": [text(12) + "?" for _ in range(n)], "answer": [text(6) for _ in range(n)]})
    scorer = DataWhisperer(
        model,
        tokenizer,
        n_demos=5,
        n_queries=3,
        max_answer_tokens=8 if args.tiny else 64,
        max_retries=0,
        use_chat_template=chat,
        batch_prompts=8,
    )
    start = time.perf_counter()
    try:
        scorer.score(pool)
    except ValueError as error:  # a random model's answers do not parse; every group was still run
        if not args.tiny:
            raise
        print(f"  (random tiny model, no group parsed: {str(error)[:60]}...)")
    _sync(device)
    seconds = time.perf_counter() - start
    groups = scorer.stats["groups"]
    print(f"  {seconds / groups:.3f} s per group ({groups} groups of 5 demos + 3 queries, {n} examples)")
    print("  target: about one generation of max_answer_tokens per group (batched 8 groups at a time)")
    results["data_whisperer"] = {"seconds_per_group": seconds / groups, "groups": groups}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny random models and sizes (CI on CPU)")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--sections", default="ai,steps,harness,dw")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible (use --device cpu --tiny)")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    sections = set(args.sections.split(","))
    started = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"hf-select GPU check on {name}, {dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    results: dict = {"device": name, "dtype": str(dtype), "tiny": args.tiny}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if "ai" in sections:
            attention_influence_section(args, dtype, device, results)
        if "steps" in sections:
            step_overhead_section(args, dtype, device, results, Path(tmp))
        if "harness" in sections:
            harness_section(args, device, results)
        if "dw" in sections:
            data_whisperer_section(args, dtype, device, results)
    results["seconds"] = time.perf_counter() - started
    print(f"\ntotal {results['seconds']:.0f} s (budget: 8 minutes on one GPU)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
