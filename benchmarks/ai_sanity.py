"""AttentionInfluence sanity check (arXiv 2505.07293, appendix D): masking the retrieval heads should wreck
in-context retrieval, masking as many random other heads should barely matter.

Measures teacher-forced proxy-task accuracy (``hf_select.proxy_task_accuracy``) of the base model with no
head masked, with the top-5% retrieval heads masked (causal uniform attention) and with the same number of
random non-selected heads masked (several draws). Heads are detected on one half of the proxy samples and
accuracy is measured on the other half. Expectation: top heads cut accuracy by >= 80% relative, random heads
by <= 20% -- printed for the teacher-forced token accuracy and for the sample accuracy (whole answers right; the
paper's App. D reports task accuracy, which is whole answers).

Model: the embedded SmolLM2-135M-Instruct (``--cache_dir``, default ``.hf_select_cache``; built by
``hf-select build-demo``) with the demo stage's calibrated proxy (``hf_select.demo.stage_retrieval_heads``) and
its masking check (random heads drawn among the non-retrieval heads). If it is absent, the script says so and
uses a hand-built 4-layer GPT-2 whose random weights carry a planted induction circuit (two redundant
previous-token heads and one induction head) on a synthetic key-value task: a check of the machinery that runs
anywhere in seconds, not evidence about a trained model.

    python benchmarks/ai_sanity.py [--cache_dir DIR] [--num_samples 48] [--draws 5]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from hf_select.attention_influence.retrieval_heads import detect_retrieval_heads

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


def demo_model(cache_dir: Path, num_samples: int, seed: int):
    """SmolLM2 and calibrated proxy samples from the demo world's held-out prose."""
    from hf_select.attention_influence.proxy_task import build_proxy_samples
    from hf_select.demo.context import DemoContext
    from hf_select.demo.stage_pretrained_model import load_pretrained
    from hf_select.demo.stage_retrieval_heads import ProxySettings, proxy_values

    ctx = DemoContext(output_dir=Path(tempfile.mkdtemp()), cache_dir=cache_dir)
    model, tokenizer = load_pretrained(ctx)
    settings = ProxySettings()
    values = proxy_values(ctx, tokenizer, settings.max_value_tokens)
    samples = build_proxy_samples(
        values, tokenizer, num_samples=num_samples, context_tokens=settings.context_tokens,
        key_length=settings.key_length, seed=seed,
    )  # fmt: skip
    print(f"proxy samples: {settings}")
    return model, tokenizer, samples


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
    from dataclasses import replace

    from hf_select.demo.stage_retrieval_heads import ProxySettings, masking_check

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache_dir", type=Path, default=Path(".hf_select_cache"))
    parser.add_argument("--num_samples", type=int, default=48)
    parser.add_argument("--top_fraction", type=float, default=0.05)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    model_dir = args.cache_dir / "models" / "SmolLM2-135M-Instruct"
    if (model_dir / "config.json").exists():
        print(f"model: SmolLM2-135M-Instruct at {model_dir}")
        model, tokenizer, samples = demo_model(args.cache_dir, args.num_samples, args.seed)
    else:
        print(
            f"model: no embedded model at {model_dir}; using a hand-built 4-layer GPT-2 with a planted "
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
    settings = replace(ProxySettings(), random_draws=args.draws, top_fraction=args.top_fraction)
    check = masking_check(model, tokenizer, evaluate, heads, settings, args.seed)
    print(f"\nproxy accuracy on {len(evaluate)} held-out samples (whole answer / first token / all tokens):")

    def line(label, acc):
        return f"  {label:<40}{acc['sample_accuracy']:.3f} / {acc['first_token_accuracy']:.3f} / {acc['token_accuracy']:.3f}"

    print(line("no heads masked", check["none"]))
    print(line(f"top {len(heads.selected)} retrieval heads masked", check["top"]))
    for i, draw in enumerate(check["random_draws"]):
        print(line(f"random draw {i} ({check['random_pool']})", draw) + f"  heads {draw['heads']}")
    print(line(f"random heads, mean of {len(check['random_draws'])}", check["random"]))
    for metric in ("sample_accuracy", "token_accuracy"):
        print(expectation(metric, check["none"][metric], check["top"][metric], check["random"][metric]))
    print(f"time: {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
