"""AttentionInfluence sanity check (arXiv 2505.07293, appendix D): masking the retrieval heads should wreck
in-context retrieval, masking as many random other heads should barely matter.

Measures teacher-forced proxy-task accuracy (``hf_select.proxy_task_accuracy``) of the base model with no
head masked, with the top-5% retrieval heads masked (causal uniform attention) and with the same number of
random non-selected heads masked (several draws). Heads are detected on one half of the proxy samples and
accuracy is measured on the other half. Expectation: top heads cut accuracy by >= 80% relative, random heads
by <= 20% -- printed for the teacher-forced token accuracy and for the sample accuracy (whole answers right; the
paper's App. D reports task accuracy, which is whole answers).

Model: the demo base model (``--model_dir``, default ``.hf_select_cache/world/base_model`` with the world's
tokenizer and key-value samples built from its prose). If it is absent, the script says so and uses a
hand-built 4-layer GPT-2 whose random weights carry a planted induction circuit (two redundant
previous-token heads and one induction head) on a synthetic key-value task: a check of the machinery that
runs anywhere in seconds, not evidence about a trained model.

    python benchmarks/ai_sanity.py [--model_dir DIR --tokenizer_dir DIR] [--draws 5]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from hf_select.head_masking import mask_heads
from hf_select.proxy_accuracy import proxy_task_accuracy
from hf_select.retrieval_heads import detect_retrieval_heads

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
NUM_KEYS, NUM_VALUES = 16, 104
WORDS = [f"k{i}" for i in range(NUM_KEYS)] + [f"v{i}" for i in range(NUM_VALUES)] + ["{", "}", ","]


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
    keys = rng.sample(range(NUM_KEYS), rng.randint(4, 7))
    values = [" ".join(f"v{rng.randrange(NUM_VALUES)}" for _ in range(rng.randint(2, 4))) for _ in keys]
    query = rng.randrange(len(keys))
    text, span = "{", None
    for i, (key, value) in enumerate(zip(keys, values)):
        text += f" k{key} "
        if i == query:
            span = [len(text), len(text) + len(value)]
        text += value + (" ," if i < len(keys) - 1 else "")
    return {"prompt": text + f" }} k{keys[query]}", "answer": " " + values[query], "value_span": span}


def planted_induction_model(tokenizer, seed: int = 0):
    """A 4-layer GPT-2 (4 heads per layer; every other weight random) with a hand-built induction circuit.

    Residual layout: token code (random unit vector, dims 0-63) | position one-hot (64-127) | previous-token
    code (128-191) | free. Heads (0, 0) and (0, 1) are redundant previous-token heads; head (2, 1) attends to
    the position after the previous occurrence of the current token and writes that token's code to the
    output. Nothing is trained: a CPU-cheap stand-in for a pretrained model, not a result about one.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab, positions, d = len(tokenizer), 64, 64
    config = GPT2Config(
        vocab_size=vocab,
        n_embd=4 * d,
        n_layer=4,
        n_head=4,
        n_positions=positions,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    e = config.n_embd
    codes = torch.nn.functional.normalize(torch.randn(vocab, d), dim=-1)

    def clear(attn, head):
        for part in range(3):
            attn.c_attn.weight[:, part * e + head * d : part * e + (head + 1) * d] = 0
            attn.c_attn.bias[part * e + head * d : part * e + (head + 1) * d] = 0
        attn.c_proj.weight[head * d : (head + 1) * d] = 0

    with torch.no_grad():
        model.transformer.wte.weight.zero_()
        model.transformer.wte.weight[:, :d] = codes
        model.transformer.wpe.weight.zero_()
        model.transformer.wpe.weight[:, d : 2 * d] = torch.eye(positions)
        attn = model.transformer.h[0].attn
        for head in (0, 1):  # previous-token heads
            clear(attn, head)
            for i in range(positions):
                attn.c_attn.weight[d + i, head * d + i] = 40.0  # query: own position
                if i + 1 < positions:
                    attn.c_attn.weight[d + i, e + head * d + i + 1] = 1.0  # key: position + 1
            attn.c_attn.weight[:d, 2 * e + head * d : 2 * e + (head + 1) * d] = torch.eye(d)  # value: token
            attn.c_proj.weight[head * d : (head + 1) * d, 2 * d : 3 * d] = torch.eye(
                d
            )  # -> previous-token slot
        attn = model.transformer.h[2].attn
        head = 1  # induction head
        clear(attn, head)
        attn.c_attn.weight[:d, head * d : (head + 1) * d] = 10 * torch.eye(d)  # query: current token
        attn.c_attn.weight[2 * d : 3 * d, e + head * d : e + (head + 1) * d] = torch.eye(
            d
        )  # key: previous token
        attn.c_attn.weight[:d, 2 * e + head * d : 2 * e + (head + 1) * d] = torch.eye(d)  # value: token
        attn.c_proj.weight[head * d : (head + 1) * d, :d] = 10 * torch.eye(d)  # -> read out by the LM head
    return model


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
    # the proxy context / key / value lengths it was trained for
    info = model_dir / "hf_select_base_model.json"
    if info.exists():
        ctx.results["base_model"] = json.loads(info.read_text())
    samples, settings = proxy_samples(ctx, tokenizer, int(model.config.max_position_embeddings))
    print(f"proxy samples: {settings}")
    return model, tokenizer, samples[:num_samples]


def relative_drop(base: float, value: float) -> float:
    return (base - value) / base if base > 0 else float("nan")


def expectation(metric: str, base: float, top_masked: float, random_masked: float) -> str:
    """The paper's expectation (App. D reports task accuracy, i.e. whole answers: the sample accuracy here; the
    teacher-forced token accuracy keeps the answer tokens that the language prior alone gets right)."""
    if base <= 0:
        return f"expectation ({metric}): not measurable, the unmasked model scores 0"
    drop_top, drop_random = relative_drop(base, top_masked), relative_drop(base, random_masked)
    return (
        f"expectation ({metric}): top heads drop >= 80%: {'OK' if drop_top >= 0.8 else 'MISSED'}; "
        f"random heads drop <= 20%: {'OK' if drop_random <= 0.2 else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", type=Path, default=Path(".hf_select_cache/world/base_model"))
    parser.add_argument("--tokenizer_dir", type=Path, default=None)
    parser.add_argument("--num_samples", type=int, default=120)
    parser.add_argument("--top_fraction", type=float, default=0.05)
    parser.add_argument("--draws", type=int, default=8)
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
            f"model: no demo base model at {args.model_dir}; using a hand-built 4-layer GPT-2 with a planted "
            "induction circuit (random other weights, not trained) on a synthetic key-value task"
        )
        tokenizer = synthetic_tokenizer()
        model = planted_induction_model(tokenizer, seed=args.seed)
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
    draws = [sorted(rng.sample(others, len(heads.selected))) for _ in range(args.draws)]
    randoms = [accuracy(draw) for draw in draws]
    print(f"\nproxy accuracy on {len(evaluate)} held-out samples (token / sample):")
    print(f"  no heads masked                 {base['token_accuracy']:.3f} / {base['sample_accuracy']:.3f}")
    print(
        f"  top {len(heads.selected)} retrieval heads masked    "
        f"{masked_top['token_accuracy']:.3f} / {masked_top['sample_accuracy']:.3f}  "
        f"(relative drop {relative_drop(base['token_accuracy'], masked_top['token_accuracy']):.1%} / "
        f"{relative_drop(base['sample_accuracy'], masked_top['sample_accuracy']):.1%})"
    )
    for i, (draw, acc) in enumerate(zip(draws, randoms)):
        print(
            f"  random {len(heads.selected)} other heads, draw {i}   "
            f"{acc['token_accuracy']:.3f} / {acc['sample_accuracy']:.3f}  heads {draw}"
        )
    mean_token = sum(a["token_accuracy"] for a in randoms) / len(randoms)
    mean_sample = sum(a["sample_accuracy"] for a in randoms) / len(randoms)
    print(
        f"  random heads, mean of {len(randoms)}      {mean_token:.3f} / {mean_sample:.3f}  "
        f"(relative drop {relative_drop(base['token_accuracy'], mean_token):.1%} / "
        f"{relative_drop(base['sample_accuracy'], mean_sample):.1%})"
    )
    for metric, random_mean in (("token_accuracy", mean_token), ("sample_accuracy", mean_sample)):
        print(expectation(metric, base[metric], masked_top[metric], random_mean))
    print(f"time: {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
