"""MeCo vs standard pretraining at equal training tokens (arXiv 2501.01956) on the demo corpus.

Three students with the same initialisation, rows of ``--seq`` tokens, batch, steps and optimiser:

- ``standard``: plain documents (document-masked packing), the baseline;
- ``meco``: the first 90% of the steps on ``"URL: <host>\\n\\n" + document`` (labels -100 on the prefix), the last
  10% on plain documents from a disjoint 10% of the training documents;
- ``metadata_only`` (with ``--ablation``): MeCo without cooldown (``cooldown_fraction=0``), the paper's ablation.

Each is scored on held-out documents (bits per UTF-8 byte of the same characters): without metadata, with the
document's own URL host, and with a wrong host (another source's). Data: the demo world at
``--cache-dir/world`` if it exists (its tokenizer and base-model architecture); otherwise a fallback corpus built
here from local text -- CPython standard-library source (URL github.com/python/cpython/...) and docstrings of the
standard library and installed packages (URLs of each project's documentation site) -- with a small BPE
tokenizer trained on it. The script says which it used.

    python benchmarks/meco_demo.py [--steps 150 --batch 8 --seq 128 --cache-dir .hf_select_cache --ablation]
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import sys
import sysconfig
import time
from pathlib import Path

import torch

# name -> (importable package, documentation URL template); the module path fills {mod}
DOCSTRING_SOURCES = {
    "stdlib": (None, "https://docs.python.org/3/library/{mod}.html"),
    "numpy": ("numpy", "https://numpy.org/doc/stable/reference/generated/{mod}.html"),
    "torch": ("torch", "https://pytorch.org/docs/stable/{mod}.html"),
    "transformers": ("transformers", "https://huggingface.co/docs/transformers/{mod}"),
    "matplotlib": ("matplotlib", "https://matplotlib.org/stable/api/{mod}.html"),
    "sympy": ("sympy", "https://docs.sympy.org/latest/modules/{mod}.html"),
    "pandas": ("pandas", "https://pandas.pydata.org/docs/reference/{mod}.html"),
    "networkx": ("networkx", "https://networkx.org/documentation/stable/reference/{mod}.html"),
}
CODE_URL = "https://github.com/python/cpython/blob/3.11/Lib/{rel}"


def _py_files(root: Path, limit: int, rng: random.Random) -> list[Path]:
    skip = {"test", "tests", "testing", "idlelib", "site-packages", "_vendor", "__pycache__"}
    files = [p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts)]
    files.sort()
    rng.shuffle(files)
    return files[:limit]


def _docstrings(source: str, max_chars: int) -> str:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 40:
                title = getattr(node, "name", "")
                parts.append(f"{title}\n{doc}" if title else doc)
        if sum(map(len, parts)) > max_chars:
            break
    return "\n\n".join(parts)[:max_chars]


def fallback_corpus(files_per_source: int = 150, max_chars: int = 3000, seed: int = 0) -> list[dict]:
    """Documents ``{text, url, source}`` from local Python sources: stdlib code and package docstrings."""
    import importlib.util

    rng = random.Random(seed)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in _py_files(stdlib, files_per_source, rng):
        text = path.read_text(errors="replace")[:max_chars]
        if len(text) > 200:
            docs.append(
                {"text": text, "url": CODE_URL.format(rel=path.relative_to(stdlib)), "source": "code"}
            )
    for name, (package, template) in DOCSTRING_SOURCES.items():
        if package is None:
            root = stdlib
        else:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                continue
            root = Path(next(iter(spec.submodule_search_locations))).parent
        for path in _py_files(root if package is None else root / package, files_per_source, rng):
            text = _docstrings(path.read_text(errors="replace"), max_chars)
            if len(text) > 200:
                mod = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                docs.append({"text": text, "url": template.format(mod=mod), "source": name})
    rng.shuffle(docs)
    return docs


def fallback_tokenizer(texts: list[str], vocab_size: int = 2048):
    from hf_select.dataset_scripts.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(texts, vocab_size, min_frequency=0, with_bos=False)


def load_data(cache_dir: Path, heldout_docs: int, seed: int, corpus_cache: str | Path | None = None):
    """``(tokenizer, model_config, train, heldout, description)`` from the demo world or the fallback corpus
    (cached as JSON at ``corpus_cache`` when given)."""
    from datasets import Dataset, load_from_disk
    from transformers import AutoTokenizer, LlamaConfig

    world = cache_dir / "world"
    if (world / "pretrain").exists() and (world / "tokenizer").exists():
        from hf_select.demo.context import DemoContext
        from hf_select.demo.students import student_config

        data = load_from_disk(str(world / "pretrain"))
        heldout = data["heldout"].shuffle(seed=seed).select(range(min(heldout_docs, len(data["heldout"]))))
        tokenizer = AutoTokenizer.from_pretrained(world / "tokenizer")
        return (
            tokenizer,
            student_config(DemoContext("demo_output", cache_dir), tokenizer),
            data["train"],
            heldout,
            f"demo world at {world}",
        )
    cached = Path(corpus_cache) if corpus_cache else None
    if cached is not None and cached.exists():
        docs = json.loads(cached.read_text())
    else:
        docs = fallback_corpus(seed=seed)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(docs))
    tokenizer = fallback_tokenizer([d["text"] for d in docs])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    data = Dataset.from_list(docs)
    heldout = data.select(range(heldout_docs))
    train = data.select(range(heldout_docs, len(data)))
    sources = sorted(set(data["source"]))
    what = (
        f"FALLBACK corpus (no demo world at {world}): {len(data)} local documents -- CPython stdlib source + "
        f"docstrings of {', '.join(s for s in sources if s != 'code')}; BPE tokenizer with {len(tokenizer)} tokens"
    )
    return tokenizer, config, train, heldout, what


def fresh_model(config, seed: int):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def common_args(out: Path, name: str, args) -> dict:
    return {
        "output_dir": str(out / name),
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch,
        "learning_rate": 2e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,
        "weight_decay": 0.01,
        "logging_steps": max(1, args.steps // 4),
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "seed": args.seed,
        "data_seed": args.seed,
        "disable_tqdm": True,
        "remove_unused_columns": False,
    }


def train_standard(config, tokenizer, train, out: Path, args):
    from transformers import Trainer, TrainingArguments

    from hf_select.meco.metadata import add_metadata_tokens
    from hf_select.packing import PackedCollator, pack_dataset_batch

    docs = add_metadata_tokens(train, tokenizer, metadata_column=None)
    rows = docs.map(
        pack_dataset_batch,
        batched=True,
        batch_size=1000,
        remove_columns=docs.column_names,
        fn_kwargs={"max_length": args.seq},
    )
    model = fresh_model(config, args.seed)
    trainer = Trainer(
        model,
        TrainingArguments(**common_args(out, "standard", args)),
        train_dataset=rows,
        data_collator=PackedCollator(tokenizer.pad_token_id),
    )
    seen = args.steps * args.batch
    tokens = sum(len(r) for r in rows.select(range(min(seen, len(rows))))["input_ids"])
    tokens = tokens * seen / min(seen, len(rows))  # rows are reused when the pool is smaller than the budget
    trainer.train()
    return model, {"rows_in_pool": len(rows), "tokens_seen": int(tokens)}


def train_meco(config, tokenizer, train, out: Path, args, cooldown_fraction: float, name: str):
    from hf_select.trainer_ext import MeCoConfig, MeCoTrainer
    from hf_select.trainer_ext.meco_trainer import split_cooldown_pool

    conditioning, cooldown = (
        split_cooldown_pool(train, cooldown_fraction, args.seed) if cooldown_fraction > 0 else (train, None)
    )
    meco_args = MeCoConfig(
        **common_args(out, name, args),
        cooldown_fraction=cooldown_fraction,
        max_length=args.seq,
        metadata_column="url",
        metadata_mode="host",
    )
    model = fresh_model(config, args.seed)
    trainer = MeCoTrainer(
        model, meco_args, train_dataset=conditioning, cooldown_dataset=cooldown, processing_class=tokenizer
    )
    tokens = sum(len(r) for r in trainer.train_dataset["input_ids"])
    trainer.train()
    return model, {"conditioned_steps": trainer.conditioned_steps, "tokens_seen": int(tokens)}


def score(model, tokenizer, heldout, max_chars: int) -> dict[str, float]:
    from hf_select.meco.conditional import prefixed_text_losses
    from hf_select.meco.metadata import metadata_prefix, official_host
    from hf_select.token_loss import bits_per_byte

    texts = [t[:max_chars] for t in heldout["text"]]
    hosts = [official_host(u) for u in heldout["url"]]
    others = sorted(set(hosts))
    wrong = [others[(others.index(h) + 1) % len(others)] for h in hosts]  # another source's host
    model.eval()
    result = {}
    for name, prefix in (
        ("no metadata", None),
        ("own URL", [metadata_prefix(u) for u in heldout["url"]]),
        ("wrong URL", [metadata_prefix(h) for h in wrong]),
    ):
        out = prefixed_text_losses(model, tokenizer, texts, prefix, batch_size=16)
        result[name] = bits_per_byte(out["nats"], out["num_bytes"])
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--heldout-docs", type=int, default=100)
    parser.add_argument("--eval-chars", type=int, default=1000)
    parser.add_argument("--cache-dir", default=".hf_select_cache")
    parser.add_argument("--out", default="/tmp/hf_select_meco_demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine)"
    )
    parser.add_argument("--ablation", action="store_true", help="also train the metadata-only student")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging

    logging.set_verbosity_error()
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    start = time.perf_counter()
    tokenizer, config, train, heldout, what = load_data(
        Path(args.cache_dir), args.heldout_docs, args.seed, Path(args.out) / "fallback_corpus.json"
    )
    print(f"data: {what} ({time.perf_counter() - start:.0f}s)")
    print(
        f"train documents {len(train)}, held-out documents {len(heldout)}; {args.steps} steps x {args.batch} rows x {args.seq} tokens"
    )
    out = Path(args.out)
    students = {}
    t = time.perf_counter()
    model, info = train_standard(config, tokenizer, train, out, args)
    students["standard"] = (model, info, time.perf_counter() - t)
    for name, fraction in [("meco", 0.1)] + ([("metadata_only", 0.0)] if args.ablation else []):
        t = time.perf_counter()
        model, info = train_meco(config, tokenizer, train, out, args, fraction, name)
        students[name] = (model, info, time.perf_counter() - t)
    rows = {}
    for name, (model, info, seconds) in students.items():
        rows[name] = {
            **score(model, tokenizer, heldout, args.eval_chars),
            **info,
            "train_seconds": round(seconds, 1),
        }
    print(
        f"\nheld-out bits per byte ({len(heldout)} documents, first {args.eval_chars} characters each; lower is better)"
    )
    print(
        f"{'student':<15}{'no metadata':>13}{'own URL':>10}{'wrong URL':>11}{'tokens seen':>13}{'train s':>9}"
    )
    for name, r in rows.items():
        print(
            f"{name:<15}{r['no metadata']:>13.4f}{r['own URL']:>10.4f}{r['wrong URL']:>11.4f}"
            f"{r['tokens_seen']:>13}{r['train_seconds']:>9.1f}"
        )
    base = rows["standard"]["no metadata"]
    meco = rows["meco"]
    print(
        f"\nMeCo vs standard, no metadata: {meco['no metadata'] - base:+.4f} bits/byte ({(meco['no metadata'] / base - 1) * 100:+.2f}%)"
    )
    print(
        f"MeCo own URL vs no metadata: {meco['own URL'] - meco['no metadata']:+.4f} bits/byte; wrong URL vs no metadata: {meco['wrong URL'] - meco['no metadata']:+.4f}"
    )
    if "metadata_only" in rows:
        mo = rows["metadata_only"]
        print(
            f"metadata-only (no cooldown), no metadata vs own URL: {mo['no metadata']:.4f} vs {mo['own URL']:.4f}"
        )
    print(f"total {time.perf_counter() - start:.0f}s")
    (out / "meco_demo.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "meco_demo.json").write_text(
        json.dumps({"data": what, "args": vars(args), "results": rows}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
