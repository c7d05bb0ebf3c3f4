"""AttentionInfluence sanity check (arXiv 2505.07293, appendix D): masking the retrieval heads should wreck
in-context retrieval, masking as many random other heads should barely matter.

Measures teacher-forced proxy-task accuracy (``hf_select.proxy_task_accuracy``) of the base model with no
head masked, with the top-5% retrieval heads masked (causal uniform attention) and with the same number of
random non-selected heads masked (several draws). Heads are detected on one half of the proxy samples and
accuracy is measured on the other half. Expectation: top heads cut accuracy by >= 80% relative, random heads
by <= 20%.

Model: the demo base model (``--model_dir``, default ``.hf_select_cache/world/base_model`` with the world's
tokenizer and key-value samples built from its prose). If it is absent, the script trains a tiny Llama with
grouped-query attention on a synthetic key-value copy task first (about a minute on 2 CPU cores) and says so.

    python benchmarks/ai_sanity.py [--model_dir DIR --tokenizer_dir DIR] [--draws 5]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from hf_select.head_masking import mask_heads
from hf_select.proxy_accuracy import proxy_task_accuracy
from hf_select.retrieval_heads import detect_retrieval_heads

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
WORDS = [f"k{i}" for i in range(64)] + [f"v{i}" for i in range(128)] + ["{", "}", ","]


def synthetic_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def synthetic_sample(rng: random.Random) -> dict:
    """``{ k3 v1 v9 v4 , k17 v5 v2 , ... } k3`` -> `` v1 v9 v4``: the key's value occurs once in the context,
    so answering needs in-context retrieval (an induction/copy mechanism), not memorisation."""
    keys = rng.sample(range(64), rng.randint(4, 8))
    values = [" ".join(f"v{rng.randrange(128)}" for _ in range(rng.randint(2, 4))) for _ in keys]
    query = rng.randrange(len(keys))
    text, span = "{", None
    for i, (key, value) in enumerate(zip(keys, values)):
        text += f" k{key} "
        if i == query:
            span = [len(text), len(text) + len(value)]
        text += value + (" ," if i < len(keys) - 1 else "")
    return {"prompt": text + f" }} k{keys[query]}", "answer": " " + values[query], "value_span": span}


def train_synthetic_model(tokenizer, steps: int = 1500, seed: int = 0):
    """A 2-layer Llama (8 query heads, 4 KV heads) trained on the answer tokens of synthetic samples."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_select.proxy_accuracy import encode_prompt_answer

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    rng = random.Random(seed)
    check = [synthetic_sample(random.Random(10_000 + i)) for i in range(64)]
    for step in range(steps):
        batch = [
            encode_prompt_answer(tokenizer, **{k: s[k] for k in ("prompt", "answer")})
            for s in (synthetic_sample(rng) for _ in range(32))
        ]
        length = max(len(ids) for ids, _ in batch)
        ids = torch.zeros(len(batch), length, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        mask = torch.zeros_like(ids)
        for row, (tokens, start) in enumerate(batch):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            labels[row, start : len(tokens)] = torch.tensor(tokens[start:])
            mask[row, : len(tokens)] = 1
        model.train()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss  # HF shifts labels itself
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if (step + 1) % 100 == 0:
            model.eval()
            acc = proxy_task_accuracy(model, tokenizer, check)["sample_accuracy"]
            print(
                f"  step {step + 1}: loss {loss.item():.3f}, held-out sample accuracy {acc:.3f}", flush=True
            )
            if acc >= 0.97:
                break
    return model.eval()


def demo_model(model_dir: Path, tokenizer_dir: Path, num_samples: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_select.demo.context import DemoContext
    from hf_select.demo.stage_retrieval_heads import proxy_samples

    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    world = model_dir.parent
    ctx = DemoContext(
        output_dir=Path(tempfile.mkdtemp()), cache_dir=world.parent, quick=world.name.endswith("quick")
    )
    samples, settings = proxy_samples(ctx, tokenizer, int(model.config.max_position_embeddings))
    print(f"proxy samples: {settings}")
    return model, tokenizer, samples[:num_samples]


def relative_drop(base: float, value: float) -> float:
    return (base - value) / base if base > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", type=Path, default=Path(".hf_select_cache/world/base_model"))
    parser.add_argument("--tokenizer_dir", type=Path, default=None)
    parser.add_argument("--num_samples", type=int, default=120)
    parser.add_argument("--top_fraction", type=float, default=0.05)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    tokenizer_dir = args.tokenizer_dir or args.model_dir.parent / "tokenizer"
    if (args.model_dir / "config.json").exists():
        print(f"model: demo base model {args.model_dir}")
        model, tokenizer, samples = demo_model(args.model_dir, tokenizer_dir, args.num_samples)
    else:
        print(
            f"model: no demo base model at {args.model_dir}; training a tiny Llama (2 layers x 8 heads, "
            "4 KV heads) on a synthetic key-value copy task"
        )
        tokenizer = synthetic_tokenizer()
        model = train_synthetic_model(tokenizer, seed=args.seed)
        rng = random.Random(12345)
        samples = [synthetic_sample(rng) for _ in range(args.num_samples)]
    detect, evaluate = samples[: len(samples) // 2], samples[len(samples) // 2 :]
    heads = detect_retrieval_heads(
        model, tokenizer, detect, top_fraction=args.top_fraction, show_progress=False
    )
    top = heads.ranking()[:5]
    print(
        f"heads: {heads.scores.numel()} in all; selected top {args.top_fraction:.0%}: {heads.selected}; "
        f"best scores {[(layer, h, round(s, 3)) for layer, h, s in top]}; "
        f"detection samples used {heads.num_samples}, dropped {heads.num_dropped}"
    )

    def accuracy(masked):
        if not masked:
            return proxy_task_accuracy(model, tokenizer, evaluate)
        with mask_heads(model, masked):
            return proxy_task_accuracy(model, tokenizer, evaluate)

    base = accuracy([])
    masked_top = accuracy(heads.selected)
    others = [
        (layer, h)
        for layer in range(heads.scores.shape[0])
        for h in range(heads.scores.shape[1])
        if (layer, h) not in heads.selected
    ]
    rng = random.Random(args.seed)
    randoms = [accuracy(rng.sample(others, len(heads.selected))) for _ in range(args.draws)]
    print(f"\nproxy accuracy on {len(evaluate)} held-out samples (token / sample):")
    print(f"  no heads masked                 {base['token_accuracy']:.3f} / {base['sample_accuracy']:.3f}")
    print(
        f"  top {len(heads.selected)} retrieval heads masked    "
        f"{masked_top['token_accuracy']:.3f} / {masked_top['sample_accuracy']:.3f}  "
        f"(relative drop {relative_drop(base['token_accuracy'], masked_top['token_accuracy']):.1%} / "
        f"{relative_drop(base['sample_accuracy'], masked_top['sample_accuracy']):.1%})"
    )
    for i, acc in enumerate(randoms):
        print(
            f"  random {len(heads.selected)} other heads, draw {i}   "
            f"{acc['token_accuracy']:.3f} / {acc['sample_accuracy']:.3f}"
        )
    mean_token = sum(a["token_accuracy"] for a in randoms) / len(randoms)
    mean_sample = sum(a["sample_accuracy"] for a in randoms) / len(randoms)
    drop_top = relative_drop(base["token_accuracy"], masked_top["token_accuracy"])
    drop_random = relative_drop(base["token_accuracy"], mean_token)
    print(
        f"  random heads, mean of {len(randoms)}      {mean_token:.3f} / {mean_sample:.3f}  "
        f"(relative drop {drop_random:.1%} / {relative_drop(base['sample_accuracy'], mean_sample):.1%})"
    )
    print(
        f"expectation (token accuracy): top heads drop >= 80%: {'OK' if drop_top >= 0.8 else 'MISSED'}; "
        f"random heads drop <= 20%: {'OK' if drop_random <= 0.2 else 'MISSED'}"
    )
    print(f"time: {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
