"""Throughput of the AttentionInfluence scorer: three modes.

1. Default -- the scorer vs one plain forward pass and vs the naive method (tiny random llama). Same model,
data and batch in one run; the three methods are timed in interleaved rounds (median reported) so
that machine load affects them alike. The scorer runs the layers below the lowest masked layer once and the
upper layers twice; the naive method runs two full forward passes (the second masked). Target: scorer time
<= (1 + share of layers at or above the lowest masked layer) x plain, +10%; faster than naive whenever the
lowest masked layer is above 0.

    python benchmarks/ai_throughput.py [--layers 8 --hidden 128 --seq 256 --batch 8 --rounds 5]

2. ``--device cuda`` -- documents/s and tokens/s of one device (run one process per GPU: the figure is per
GPU) at ``--lengths 512,2048`` with ``--dtype bfloat16`` and sdpa attention, on ``--model`` (default: the
embedded SmolLM2-135M-Instruct when present, else a SmolLM2-sized random llama). Documents are random token
ids of exactly the given length (throughput does not depend on the text). NeMo-Curator's FineWeb-Edu
classifier runs at ~300 documents/s per L4 (its anchor). ``--device cpu`` runs the same at small sizes
(``--lengths 128,256 --docs 8`` are sensible; bfloat16 on CPU is slow, use ``--dtype float32``).

    python benchmarks/ai_throughput.py --device cuda [--model PATH --docs 256 --batch 32]

3. ``--compare_datatrove`` -- tokens/s of the datatrove path (LocalPipelineExecutor, ``--tasks`` tasks on
``--workers`` processes, ``cpus // workers`` torch threads each) vs the ``Dataset.map`` path (one process,
all threads) on the same documents (``--docs`` of the demo corpus) with the same model, in one run. The
datatrove wall time includes starting the workers and loading the model in each; the scorer-only time is
printed too.

    python benchmarks/ai_throughput.py --compare_datatrove --model PATH --docs 300
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hf_select.attention_influence.scorer import base_and_reference_losses
from hf_select.testing import tiny_model
from hf_select.token_loss import per_token_loss

DEFAULT_MODEL = ".hf_select_cache/models/SmolLM2-135M-Instruct"


def _fixed_heads(model, count: int) -> list[tuple[int, int]]:
    """``count`` heads spread over the upper two thirds of the layers (throughput depends on how many heads
    are masked and on the lowest masked layer, not on which heads; a real run uses detected heads)."""
    from hf_select.model_adapter import get_model_adapter

    adapter = get_model_adapter(model)
    first = adapter.num_layers // 3
    pairs = [(layer, head) for layer in range(first, adapter.num_layers) for head in range(adapter.num_heads)]
    step = max(1, len(pairs) // count)
    return pairs[::step][:count]


def _load(model_path: str | None, dtype: str, device: str):
    from pathlib import Path

    from hf_select.loading import load_causal_lm

    if model_path or Path(DEFAULT_MODEL).exists():
        path = model_path or DEFAULT_MODEL
        return load_causal_lm(path, dtype=dtype, attn_implementation="sdpa", device=device), path
    model = tiny_model(  # SmolLM2-135M's shape, random weights
        "llama",
        num_hidden_layers=30,
        hidden_size=576,
        intermediate_size=1536,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    )
    return model.to(device=device, dtype=getattr(torch, dtype)), "random SmolLM2-sized llama"


def per_device(args) -> None:
    """Mode 2: documents/s and tokens/s of one device at each length."""
    from hf_select.attention_influence import AttentionInfluence

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    torch.set_num_threads(args.threads)
    model, name = _load(args.model, args.dtype, args.device)
    heads = _fixed_heads(model, args.num_heads)
    vocab = model.config.vocab_size
    print(f"model: {name}; {args.dtype}, sdpa; device {device}; masked heads {heads}")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for length in [int(x) for x in args.lengths.split(",")]:
        scorer = AttentionInfluence(model, _NoTokenizer(), heads, max_length=length, batch_size=args.batch)
        gen = torch.Generator().manual_seed(length)
        docs = torch.randint(10, vocab, (args.docs, length), generator=gen).tolist()
        scorer.score_token_ids(docs[: args.batch])  # warm-up (kernels, allocator)
        sync()
        start = time.perf_counter()
        out = scorer.score_token_ids(docs)
        sync()
        seconds = time.perf_counter() - start
        tokens = sum(out["ai_num_tokens"]) + len(docs)  # every token is read; the first is not predicted
        memory = f", peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else ""
        print(
            f"  {length:>5} tokens/doc, batch {args.batch}: {len(docs) / seconds:8.1f} docs/s  "
            f"{tokens / seconds:10.0f} tokens/s per device ({seconds:.2f} s for {len(docs)} docs{memory})"
        )


class _NoTokenizer:
    """Stands in for a tokenizer when documents are given as token ids."""

    pad_token_id = 0

    def __len__(self) -> int:
        return 0


def compare_datatrove(args) -> None:
    """Mode 3: datatrove LocalPipelineExecutor vs Dataset.map, same documents and model, one run."""
    import json
    import os
    import tempfile
    from pathlib import Path

    from datasets import Dataset, load_from_disk

    from hf_select.attention_influence import AttentionInfluence, score_dataset
    from hf_select.datatrove import attention_influence_pipeline, make_executor
    from hf_select.loading import load_tokenizer

    path = args.model or DEFAULT_MODEL
    corpus = load_from_disk(args.corpus)
    texts = [text[: args.max_chars] for text in corpus.select(range(min(args.docs, len(corpus))))["text"]]
    corpus = Dataset.from_dict({"text": texts})
    model, _ = _load(path, "float32", "cpu")
    tokenizer = load_tokenizer(path)
    heads = _fixed_heads(model, args.num_heads)
    cpus = os.cpu_count() or 1
    print(
        f"model {path} (float32, sdpa, CPU, {cpus} cores); {len(texts)} documents of {args.corpus} "
        f"(cut to {args.max_chars} characters); heads {heads}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        for task in range(args.tasks):
            with open(tmp / "in" / f"{task:03d}.jsonl", "w") as f:
                for i in range(task, len(texts), args.tasks):
                    f.write(json.dumps({"id": str(i), "text": texts[i]}) + "\n")
        # Dataset.map path: one process, every core
        torch.set_num_threads(cpus)
        scorer = AttentionInfluence(model, tokenizer, heads, max_length=args.max_length, batch_size=args.batch)
        start = time.perf_counter()
        mapped = score_dataset(corpus, scorer, batch_size=args.docs_per_chunk)
        map_seconds = time.perf_counter() - start
        tokens = sum(mapped["ai_num_tokens"]) + sum(1 for n in mapped["ai_num_tokens"] if n)
        # datatrove path: tasks on workers, cpus // workers threads each
        pipeline = attention_influence_pipeline(
            str(tmp / "in"),
            str(tmp / "out"),
            path,
            heads,
            max_length=args.max_length,
            batch_size=args.batch,
            docs_per_chunk=args.docs_per_chunk,
            dtype="float32",
            attn_implementation="sdpa",
        )
        executor = make_executor(
            pipeline, "local", tasks=args.tasks, workers=args.workers, logging_dir=str(tmp / "logs")
        )
        start = time.perf_counter()
        executor.run()
        dt_seconds = time.perf_counter() - start
        scorer_seconds = []
        for stats_file in sorted((tmp / "logs" / "stats").glob("*.json")):
            steps = json.loads(stats_file.read_text())
            scorer_seconds.append(next(s for s in steps if "SCORER" in s["name"])["time_stats"]["total"])
        # the workers ran concurrently: the scoring wall time is the busiest worker's, about total / workers
        busy = sum(scorer_seconds) / min(args.workers, args.tasks)
    print(f"  Dataset.map       ({cpus} threads, 1 process): {tokens / map_seconds:8.0f} tokens/s ({map_seconds:.1f} s)")
    print(
        f"  datatrove Local   ({args.tasks} tasks, {args.workers} workers x {max(1, cpus // args.workers)} threads): "
        f"{tokens / dt_seconds:8.0f} tokens/s wall incl. worker start + model load ({dt_seconds:.1f} s); "
        f"{tokens / busy:8.0f} tokens/s scorer only ({busy:.1f} s)"
    )
    print(f"  ratio datatrove / map: wall {map_seconds / dt_seconds:.2f}, scorer only {map_seconds / busy:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="mode 2: per-device docs/s and tokens/s (cuda, cpu)")
    parser.add_argument("--compare_datatrove", action="store_true", help="mode 3: datatrove vs Dataset.map")
    parser.add_argument("--model", default=None, help="modes 2-3: model folder (default: embedded SmolLM2)")
    parser.add_argument("--dtype", default="bfloat16", help="mode 2: weight dtype")
    parser.add_argument("--lengths", default="512,2048", help="mode 2: tokens per document")
    parser.add_argument("--docs", type=int, default=256, help="modes 2-3: documents to score")
    parser.add_argument("--num_heads", type=int, default=14, help="modes 2-3: masked heads (SmolLM2: 5%% = 14)")
    parser.add_argument("--corpus", default=".hf_select_cache/world/pretrain/train", help="mode 3: documents")
    parser.add_argument("--max_length", type=int, default=1024, help="mode 3: tokens per chunk")
    parser.add_argument("--max_chars", type=int, default=None, help="mode 3: cut documents to N characters")
    parser.add_argument("--docs_per_chunk", type=int, default=64, help="mode 3: documents sorted together")
    parser.add_argument("--tasks", type=int, default=4, help="mode 3: datatrove tasks")
    parser.add_argument("--workers", type=int, default=2, help="mode 3: datatrove workers")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads_per_layer", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="sequences per forward pass")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--masked_layers", type=str, default="5,6,7", help="layers of the masked heads")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.device:
        return per_device(args)
    if args.compare_datatrove:
        return compare_datatrove(args)
    compare_methods(args)


def compare_methods(args) -> None:
    """Mode 1: scorer vs plain forward vs naive two passes on a tiny random llama."""
    torch.set_num_threads(args.threads)
    model = tiny_model(
        "llama",
        num_hidden_layers=args.layers,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_attention_heads=args.heads_per_layer,
        num_key_value_heads=args.heads_per_layer // 2,
        max_position_embeddings=max(512, args.seq),
    )
    torch.manual_seed(0)
    ids = torch.randint(4, 300, (args.batch, args.seq))
    mask = torch.ones_like(ids)
    tokens = int(mask.sum())
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: llama, {args.layers} layers, hidden {args.hidden}, {params / 1e6:.2f}M params; "
        f"batch {args.batch} x {args.seq} tokens; {args.threads} thread(s)"
    )
    for masked in (args.masked_layers, "0,7"):
        layers = [int(x) for x in masked.split(",")]
        heads = [(layer, h) for layer in layers for h in (0, 3)]
        lowest = min(layers)
        methods = {
            "plain forward": lambda: per_token_loss(model, ids, mask),
            "scorer (reuse lower layers)": lambda heads=heads: base_and_reference_losses(
                model, heads, ids, mask
            ),
            "naive (two full passes)": lambda heads=heads: base_and_reference_losses(
                model, heads, ids, mask, reuse_lower_layers=False
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in methods}
        for fn in methods.values():
            fn()  # warm-up
        for _ in range(args.rounds):
            for name, fn in methods.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(t) for name, t in times.items()}
        share = (args.layers - lowest) / args.layers
        print(
            f"\nmasked heads {heads} (lowest masked layer {lowest}, share of layers at or above: {share:.3f})"
        )
        for name, seconds in median.items():
            print(f"  {name:<30} {tokens / seconds:>10.0f} tokens/s  ({seconds * 1e3:.1f} ms/batch)")
        ratio = median["scorer (reuse lower layers)"] / median["plain forward"]
        naive = median["naive (two full passes)"] / median["plain forward"]
        target = (1 + share) * 1.1
        print(
            f"  scorer / plain = {ratio:.3f} (target <= {target:.3f}: {'OK' if ratio <= target else 'MISSED'}); "
            f"naive / plain = {naive:.3f}; scorer speed-up over naive = {naive / ratio:.3f}x"
        )


if __name__ == "__main__":
    main()
