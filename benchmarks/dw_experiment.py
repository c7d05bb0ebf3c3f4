"""Data Whisperer experiment (arXiv 2505.12212): do the scores favour the better tiers, and does fine-tuning on the
top 10% beat a random 10%? Prints AUROC(score vs tier), the fine-tuning comparison and STR.

Uses the demo world (``--world_dir`` with ``finetune/``, ``tokenizer/``, ``base_model/``) when it exists.
Otherwise (``--local``) it builds a small stand-in from local text only:

- pool: question/answer pairs from CPython standard-library docstrings ("What does `mod.func` do?" -> first
  docstring sentence), in three tiers: ``high`` = the full first sentence, ``medium`` = the same answer cut to its
  first four words, ``low`` = the answer of a different function (mismatched pair);
- tokenizer: a 1k byte-level BPE trained on the pretraining text;
- base model: a tiny Llama (4 layers, hidden 64, about 0.2M parameters) trained for ``--pretrain_steps`` on *other* docstring pairs
  written in the Data Whisperer prompt layout, so that it can answer numbered queries in context.

Run: ``python benchmarks/dw_experiment.py [--world_dir DIR] [--per_tier 60]``.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import sysconfig
import time
from pathlib import Path

import torch


def stdlib_pairs(limit: int = 1500, seed: int = 0) -> list[tuple[str, str]]:
    """(question, first docstring sentence) for public stdlib functions with an informative docstring."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if not p.name.startswith(("test", "_")))
    files += sorted(p for p in root.glob("*/*.py") if "test" not in str(p) and not p.name.startswith("_"))
    pairs = []
    for path in files:
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except (SyntaxError, ValueError):
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                sentence = re.split(r"(?<=\.)\s", " ".join(doc.split("\n\n")[0].split()))[0]
                if 6 <= len(sentence.split()) <= 30:
                    pairs.append((f"What does `{module}.{node.name}` do?", sentence))
    random.Random(seed).shuffle(pairs)
    unique = list({q: (q, a) for q, a in pairs}.values())
    return unique[:limit]


def local_world(
    per_tier: int, heldout_size: int, pretrain_steps: int, seed: int = 0, pool_dir: str | None = None
):
    """(train, heldout, tokenizer, model_factory) built from local text (see the module docstring).

    With ``pool_dir`` (a ``finetune`` DatasetDict of the demo world) the pool and held-out split are the real ones
    and only the model is the local stand-in, pretrained on other pairs of that pool.
    """
    from datasets import load_from_disk
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from hf_select.data_whisperer.experiment import stratified_sample
    from hf_select.data_whisperer.scorer import build_prompt

    if pool_dir is not None:
        data = load_from_disk(pool_dir)
        train = stratified_sample(data["train"], per_tier, seed)
        used = set(train["question"])
        rest = data["train"].shuffle(seed=seed).select(range(min(4000, len(data["train"]))))
        pre_pairs = [(q[:200], a[:200]) for q, a in zip(rest["question"], rest["answer"]) if q not in used][
            :1500
        ]
        heldout = data["heldout"]
    else:
        train, heldout, pre_pairs = _docstring_pool(per_tier, heldout_size, seed)
    # pretraining text: other pairs, in the prompt layout of Data Whisperer and of the fine-tuning format
    docs = []
    for start in range(0, len(pre_pairs) - 8, 8):
        chunk = pre_pairs[start : start + 8]
        prompt = build_prompt(None, chunk[:5], [q for q, _ in chunk[5:]], use_chat_template=False)
        docs.append(
            prompt.text + " " + "\n".join(f"Answer {j}: {a}" for j, (_, a) in enumerate(chunk[5:], 1))[10:]
        )
        docs.append("\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in chunk))
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(docs, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    stream = []
    for doc in docs:
        stream += [1, *tokenizer(doc, add_special_tokens=False).input_ids, 2]
    stream = torch.tensor(stream)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=pretrain_steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for step in range(pretrain_steps):
        idx = torch.randint(0, len(stream) - 193, (8,), generator=gen)
        batch = torch.stack([stream[i : i + 192] for i in idx])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 25 == 0 or step == pretrain_steps - 1:
            print(
                f"pretrain step {step}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f}s)",
                flush=True,
            )
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def model_factory():
        fresh = LlamaForCausalLM(config)
        fresh.load_state_dict(state)
        return fresh.eval()

    return train, heldout, tokenizer, model_factory


def _docstring_pool(per_tier: int, heldout_size: int, seed: int):
    from datasets import Dataset

    pairs = stdlib_pairs(seed=seed)
    n_pool = 3 * per_tier
    pool_pairs, held_pairs, pre_pairs = (
        pairs[:n_pool],
        pairs[n_pool : n_pool + heldout_size],
        pairs[n_pool + heldout_size :],
    )
    rows = {"question": [], "answer": [], "tier": [], "source": []}
    rng = random.Random(seed)
    for i, (q, a) in enumerate(pool_pairs):
        tier = ("high", "medium", "low")[i % 3]
        if tier == "medium":
            a = " ".join(a.split()[:4])
        elif tier == "low":
            a = pool_pairs[(i + rng.randrange(1, n_pool)) % n_pool][1]
        rows["question"].append(q)
        rows["answer"].append(a)
        rows["tier"].append(tier)
        rows["source"].append({"high": "docstring", "medium": "truncated", "low": "mismatched"}[tier])
    heldout = Dataset.from_dict(
        {"question": [q for q, _ in held_pairs], "answer": [a for _, a in held_pairs]}
    )
    return Dataset.from_dict(rows), heldout, pre_pairs


def pretrained_dir(world_dir: Path) -> Path:
    """The embedded SmolLM2-135M-Instruct next to the world (``hf-select build-demo``)."""
    return world_dir.parent / "models" / "SmolLM2-135M-Instruct"


def world_from_dir(world_dir: Path):
    from datasets import load_from_disk

    from hf_select.loading import load_causal_lm, load_tokenizer

    data = load_from_disk(str(world_dir / "finetune"))
    model_dir = pretrained_dir(world_dir)
    tokenizer = load_tokenizer(str(model_dir))

    def model_factory():
        return load_causal_lm(str(model_dir))

    return data["train"], data["heldout"], tokenizer, model_factory


def main() -> None:
    from transformers.utils import logging

    from hf_select.data_whisperer.experiment import ExperimentSettings, run_experiment

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world_dir", default=".hf_select_cache/world")
    parser.add_argument(
        "--local", action="store_true", help="Build the local stand-in even if a world exists."
    )
    parser.add_argument(
        "--pool_dir", default=None, help="Real fine-tuning pool (world/finetune) for the stand-in."
    )
    parser.add_argument("--per_tier", type=int, default=30)
    parser.add_argument("--heldout", type=int, default=30)
    parser.add_argument("--max_generate", type=int, default=20)
    parser.add_argument("--max_answer_tokens", type=int, default=40)
    parser.add_argument("--pretrain_steps", type=int, default=300)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--use_lora", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/dw_experiment.json")
    args = parser.parse_args()
    logging.set_verbosity_error()
    torch.set_num_threads(1)  # with the cores shared, one thread is ~10x faster than two here
    world = Path(args.world_dir)
    if not args.local and (world / "finetune").exists() and (pretrained_dir(world) / "config.json").exists():
        print(f"demo world: {world}")
        train, heldout, tokenizer, factory = world_from_dir(world)
    else:
        print(
            "demo world not available: local stand-in from CPython stdlib docstrings (see module docstring)"
        )
        if args.pool_dir:
            print(
                f"fine-tuning pool: {args.pool_dir}; base model: local stand-in pretrained on other pairs of it"
            )
        train, heldout, tokenizer, factory = local_world(
            args.per_tier, args.heldout, args.pretrain_steps, pool_dir=args.pool_dir
        )
    settings = ExperimentSettings(
        per_tier=args.per_tier,
        heldout_size=args.heldout,
        epochs=args.epochs,
        use_lora=args.use_lora,
        max_generate=args.max_generate,
        max_answer_tokens=args.max_answer_tokens,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run_experiment(factory, tokenizer, train, heldout, settings, out.parent / "dw_work")
    print(
        f"pool {result['pool_size']} (scored {result['scored_examples']}), stats {result['dw_stats']}, "
        f"selection valid: {result['selection_valid']}"
    )
    for text in result["unparsed_generations"]:
        print(f"unparseable generation (after 'Answer 1:'): {text!r}")
    print("mean score per tier:", {t: v["mean_score"] for t, v in result["per_tier"].items()})
    print(
        "share of the top 10% per tier:",
        {t: round(v["share_of_top"], 3) for t, v in result["per_tier"].items()},
    )
    print(
        f"AUROC(score vs tier) = {result['auroc_score_vs_tier']:.3f}  (high vs low: {result['auroc_high_vs_low']:.3f})"
    )
    print(result["table"])
    result.pop("scores")
    out.write_text(json.dumps({k: v for k, v in result.items() if k != "tiers"}, indent=2, default=str))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
