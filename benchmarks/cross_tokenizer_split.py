"""Cross-tokenizer reference losses on SmolLM2: how a reference token's loss is split over student pieces.

Reference: SmolLM2-135M-Instruct; students: a character-level tokenizer (every character boundary is a cut) and
the demo world's own 8k BPE tokenizer; documents: the demo world's pretraining held-out split. Measured, in ONE
run, for the two ``split`` rules of :func:`hf_select.slm.cross_tokenizer.cross_tokenizer_reference_losses`:

- the median share of a word token's loss (a clean token of >= 2 letters after an optional space) that goes to
  its first character, ``exact`` (the reference's prefix probabilities) vs ``uniform``;
- the mean absolute difference between the two per student token, and the share of student tokens that differ;
- the remaining approximation of ``exact``: for a sample of cuts, ``-log`` of the one-step prefix marginal (the
  tokens that contain the whole prefix) against the prefix probability that also sums the two-token paths
  (a reference token that is a proper prefix of the prefix, then a token completing it), one forward per path.

Run: ``python benchmarks/cross_tokenizer_split.py [--docs 8 --chars 600 --cuts 60]``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/hf_select/slm"))


def char_tokenizer():
    from test_cross_tokenizer import char_tokenizer as build

    return build()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / ".hf_select_cache/models/SmolLM2-135M-Instruct"))
    parser.add_argument("--world", default=str(ROOT / ".hf_select_cache/world"))
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--chars", type=int, default=600)
    parser.add_argument("--cuts", type=int, default=60, help="cuts checked against the two-token paths")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from datasets import load_from_disk

    from hf_select.loading import load_causal_lm, load_tokenizer
    from hf_select.slm.cross_tokenizer import _PrefixIndex, cross_tokenizer_reference_losses

    model, tok = load_causal_lm(args.model), load_tokenizer(args.model)
    model.eval()
    data = load_from_disk(str(Path(args.world) / "pretrain"))["heldout"]
    texts = [t[: args.chars] for t in data.shuffle(seed=0)["text"][: args.docs]]
    # keep the characters the char-level student knows (ASCII), so every character is one student token
    texts = ["".join(c for c in t if 32 <= ord(c) < 127 or c == "\n") for t in texts]
    out: dict = {"docs": len(texts), "chars": sum(map(len, texts)), "model": Path(args.model).name}
    students = {"chars": char_tokenizer()}
    world_tok = Path(args.world) / "tokenizer"
    if world_tok.exists():
        students["world-bpe"] = load_tokenizer(str(world_tok))
    for name, student in students.items():
        res = {}
        for split in ("exact", "uniform"):
            start = time.perf_counter()
            res[split] = cross_tokenizer_reference_losses(texts, model, tok, student, batch_size=4, split=split)
            out[f"{name}_{split}_seconds"] = time.perf_counter() - start
        exact = np.concatenate([np.asarray(d["ref_loss"]) for d in res["exact"]])
        uniform = np.concatenate([np.asarray(d["ref_loss"]) for d in res["uniform"]])
        both = np.isfinite(exact) & np.isfinite(uniform)
        diff = np.abs(exact - uniform)[both]
        out[name] = {
            "student_tokens": int(len(exact)), "nan_tokens": int(np.isnan(exact).sum()),
            "total_exact": float(exact[both].sum()), "total_uniform": float(uniform[both].sum()),
            "mean_abs_diff_nats": float(diff.mean()), "share_differing_1e-3": float((diff > 1e-3).mean()),
        }  # fmt: skip
        if name == "chars":
            firsts_exact, firsts_uniform = [], []
            for text, de, du in zip(texts, res["exact"], res["uniform"]):
                enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
                for t, (s, e) in zip(enc.input_ids, enc.offset_mapping):
                    piece = text[s:e]
                    word = piece.lstrip(" ")
                    if len(word) < 2 or not word.isalpha() or tok.decode([t]) != piece:
                        continue
                    first = s + (len(piece) - len(word))  # the word's first letter (student index + 1: BOS)
                    total = sum(de["ref_loss"][s + 1 : e + 1])
                    if total > 0.5:
                        firsts_exact.append(sum(de["ref_loss"][s + 1 : first + 2]) / total)
                        firsts_uniform.append(sum(du["ref_loss"][s + 1 : first + 2]) / total)
            out["chars"]["word_tokens"] = len(firsts_exact)
            out["chars"]["median_first_letter_share_exact"] = float(np.median(firsts_exact))
            out["chars"]["median_first_letter_share_uniform"] = float(np.median(firsts_uniform))
    out["two_token_paths"] = two_token_paths(model, tok, texts, args.cuts, _PrefixIndex)
    out["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps(out, indent=1))


def two_token_paths(model, tok, texts, cuts: int, index_cls) -> dict:
    """One-step prefix marginal vs the prefix probability with two-token paths, on ``cuts`` sampled cuts."""
    head_rows = model.get_output_embeddings().weight.shape[0]
    index = index_cls(tok, head_rows)
    rng = np.random.default_rng(0)
    gaps = []
    for text in texts:
        ids = [tok.bos_token_id] + tok(text, add_special_tokens=False).input_ids
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        candidates = [
            (t + 1, s, e) for t, (s, e) in enumerate(enc.offset_mapping) if e - s >= 3 and tok.decode([ids[t + 1]]) == text[s:e]
        ]
        for pos, s, e in [candidates[i] for i in rng.permutation(len(candidates))[: max(1, cuts // len(texts))]]:
            b = int(rng.integers(s + 1, e))
            prefix = text[s:b]
            probs = logp[pos - 1].exp()
            lo, hi = index.range(prefix)
            one_step = float(probs[index.order[lo:hi]].sum())
            extra = 0.0
            for j in range(1, len(prefix)):  # a first token holding prefix[:j] exactly, then one starting with the rest
                lo2, hi2 = index.range(prefix[:j])
                exact_ids = [int(v) for v in index.order[lo2:hi2] if index.texts[int(v)] == prefix[:j]]
                for v in exact_ids:
                    if float(probs[v]) < 1e-6:
                        continue
                    with torch.no_grad():
                        nxt = torch.softmax(model(torch.tensor([ids[:pos] + [v]])).logits[0, -1].double(), -1)
                    lo3, hi3 = index.range(prefix[j:])
                    extra += float(probs[v]) * float(nxt[index.order[lo3:hi3]].sum())
            gaps.append(float(np.log(one_step + extra) - np.log(one_step)))
    gaps = np.asarray(gaps)
    return {
        "cuts": int(len(gaps)),
        "median_overstatement_nats": float(np.median(gaps)),
        "mean_overstatement_nats": float(gaps.mean()),
        "p90_overstatement_nats": float(np.quantile(gaps, 0.9)),
        "max_overstatement_nats": float(gaps.max()),
    }


if __name__ == "__main__":
    main()
