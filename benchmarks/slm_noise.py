"""A small RHO-1 replication: does SLM skip noise tokens and reach a lower loss on clean text?

    python benchmarks/slm_noise.py [--world CACHE/world] [--steps 150] [--ref-steps 200] [--noise 0.25]

Text: the demo world's pretraining corpus when ``--world`` points at it, else real text that ships with
Python (the CPython standard library's sources and docstrings, split into ~1.5k-character documents).
A byte-level BPE tokenizer is trained on the training documents. Noise: runs of uniformly random tokens
(1-8 tokens each) are spliced into the training documents until about ``--noise`` of the tokens are noise;
each token's noise flag is kept. Reference: the student's architecture trained on a small clean subset (plain
CE). Students: the same initialisation, the same noisy rows and the same number of steps, trained with plain
causal-LM loss (``Trainer``) and with SLM (``SLMTrainer``, precomputed reference losses, ratio 0.6, global
scope). Reported: held-out loss on clean documents (not trained on) for both, and the share of the noise
tokens that SLM selected over training (0.6 would mean it cannot tell noise apart).
"""

from __future__ import annotations

import argparse
import random
import sysconfig
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Trainer, TrainingArguments

from hf_select.packing import PackedCollator, pack_documents
from hf_select.slm.reference_losses import compute_reference_losses
from hf_select.token_loss import per_token_loss
from hf_select.trainer_ext import SLMCollator, SLMConfig, SLMTrainer


def stdlib_documents(max_chars: int, doc_chars: int = 1500) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for path in sorted(root.glob("*.py")):
        text = path.read_text(errors="replace")
        for start in range(0, len(text), doc_chars):
            docs.append(text[start : start + doc_chars])
            total += doc_chars
        if total >= max_chars:
            break
    random.Random(0).shuffle(docs)
    return docs


def world_documents(world: str, max_chars: int) -> list[str]:
    from datasets import load_from_disk

    texts, total = [], 0
    for text in load_from_disk(str(Path(world) / "pretrain"))["train"]["text"]:
        texts.append(text[:4000])
        total += len(texts[-1])
        if total >= max_chars:
            break
    random.Random(0).shuffle(texts)
    return texts


def train_tokenizer(texts: list[str], vocab: int) -> PreTrainedTokenizerFast:
    from hf_select.dataset_scripts.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(texts, vocab, min_frequency=0, with_bos=False)


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    ids = tokenizer(texts, add_special_tokens=False).input_ids
    return [[tokenizer.bos_token_id, *x, tokenizer.eos_token_id] for x in ids]


def splice_noise(docs: list[list[int]], share: float, vocab: int, seed: int = 0):
    """Insert runs of 1-8 random tokens so that about ``share`` of all tokens are noise."""
    rng = random.Random(seed)
    out_ids, out_flags = [], []
    rate = share / (1 - share) / 4.5  # runs per clean token (mean run length 4.5)
    for doc in docs:
        ids, flags = [doc[0]], [0]
        for token in doc[1:]:
            if rng.random() < rate:
                run = rng.randint(1, 8)
                ids += [rng.randrange(4, vocab) for _ in range(run)]
                flags += [1] * run
            ids.append(token)
            flags.append(0)
        out_ids.append(ids)
        out_flags.append(flags)
    return out_ids, out_flags


def build_model(vocab: int, hidden: int, layers: int, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        use_cache=False,  # packed rows: lets transformers build the block-diagonal mask in every arm
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def common_args(steps: int, batch: int, lr: float) -> dict:
    return dict(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.01,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=max(1, steps // 5),
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        remove_unused_columns=False,
    )


class NoiseTrackingSLMTrainer(SLMTrainer):
    """Counts how many noise tokens the selection keeps (rows carry an ``is_noise`` column)."""

    noise_valid = noise_selected = 0

    def _select(self, inputs, scores, valid):
        selected, total = super()._select(inputs, scores, valid)
        noise = inputs["is_noise"].bool() & valid
        self.noise_valid += int(noise.sum())
        self.noise_selected += int((noise & selected).sum())
        return selected, total


def heldout_loss(model, docs: list[list[int]], seq: int) -> float:
    rows = pack_documents(docs, seq)
    collate = PackedCollator(use_cache=None)
    total, count = 0.0, 0
    model.eval()
    for start in range(0, len(rows["input_ids"]), 16):
        feats = [
            {k: rows[k][i] for k in ("input_ids", "labels", "position_ids")}
            for i in range(start, min(start + 16, len(rows["input_ids"])))
        ]
        batch = collate(feats)
        losses, mask = per_token_loss(model, batch["input_ids"], None, batch["position_ids"], batch["labels"])
        total += float(losses[mask].sum())
        count += int(mask.sum())
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=None, help="demo world folder (default: Python stdlib text)")
    parser.add_argument("--chars", type=int, default=600_000)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--ref-steps", type=int, default=200)
    parser.add_argument(
        "--clean-share", type=float, default=0.3, help="share of training docs the reference sees"
    )
    parser.add_argument("--noise", type=float, default=0.25)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    texts = world_documents(args.world, args.chars) if args.world else stdlib_documents(args.chars)
    n_held = max(20, len(texts) // 20)
    held_texts, train_texts = texts[:n_held], texts[n_held:]
    tokenizer = train_tokenizer(train_texts, args.vocab)
    train_docs, held_docs = encode(tokenizer, train_texts), encode(tokenizer, held_texts)
    clean_docs = train_docs[: int(len(train_docs) * args.clean_share)]

    # reference: plain CE on a small clean subset
    ref = build_model(args.vocab, args.hidden, args.layers, seed=1)
    clean_rows = pack_documents(clean_docs, args.seq)
    clean_rows.pop("num_documents")
    Trainer(
        model=ref,
        args=TrainingArguments(**common_args(args.ref_steps, args.batch, args.lr)),
        train_dataset=Dataset.from_dict(clean_rows),
        data_collator=PackedCollator(),
    ).train()
    ref.eval()

    noisy_ids, noise_flags = splice_noise(train_docs, args.noise, args.vocab)
    rows = pack_documents(noisy_ids, args.seq, columns={"is_noise": noise_flags})
    rows.pop("num_documents")
    rows = Dataset.from_dict(rows).shuffle(seed=0)
    rows = rows.select(range(min(len(rows), args.steps * args.batch)))  # the rows the students consume
    noise_share = sum(map(sum, rows["is_noise"])) / sum(map(len, rows["is_noise"]))
    rows = compute_reference_losses(rows, ref, batch_size=32)

    clm = build_model(args.vocab, args.hidden, args.layers, seed=0)
    Trainer(
        model=clm,
        args=TrainingArguments(**common_args(args.steps, args.batch, args.lr)),
        train_dataset=rows,
        data_collator=PackedCollator(),
    ).train()
    slm = build_model(args.vocab, args.hidden, args.layers, seed=0)
    slm_trainer = NoiseTrackingSLMTrainer(
        model=slm,
        args=SLMConfig(
            **common_args(args.steps, args.batch, args.lr), token_select_ratio=0.6, select_scope="global"
        ),
        train_dataset=rows,
        data_collator=SLMCollator(pad_columns=("ref_loss", "is_noise")),
    )
    slm_trainer.train()

    tokens = args.steps * args.batch * args.seq
    print(
        f"text: {'demo world' if args.world else 'CPython stdlib'}; {len(train_docs)} train docs, {len(held_docs)} "
        f"held-out docs; BPE vocab {args.vocab}; llama {sum(p.numel() for p in clm.parameters()) / 1e6:.2f}M params"
    )
    print(
        f"noise tokens in the training rows: {noise_share:.1%}; reference: {args.ref_steps} steps on "
        f"{len(clean_docs)} clean docs; students: {args.steps} steps x {args.batch} x {args.seq} = {tokens} tokens"
    )
    print(f"held-out loss on clean text  reference: {heldout_loss(ref, held_docs, args.seq):.4f}")
    print(f"held-out loss on clean text  CLM:       {heldout_loss(clm, held_docs, args.seq):.4f}")
    print(f"held-out loss on clean text  SLM:       {heldout_loss(slm, held_docs, args.seq):.4f}")
    share = slm_trainer.noise_selected / max(slm_trainer.noise_valid, 1)
    print(f"share of noise tokens SLM selected: {share:.1%} (all tokens: 60%)")
    print(f"wall time: {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
