"""The demo world's tokenizer: a byte-level BPE trained with ``tokenizers`` on the pretraining corpus."""

from __future__ import annotations

from pathlib import Path

from ..bpe import SPECIAL_TOKENS, train_bpe_tokenizer

__all__ = ["SPECIAL_TOKENS", "build_tokenizer", "train_bpe_tokenizer"]


def build_tokenizer(dataset, out_dir: str | Path, vocab_size: int = 8192, batch_size: int = 1000):
    """Train on ``dataset['text']`` and save to ``out_dir`` (an HF tokenizer folder)."""

    def batches():
        for start in range(0, len(dataset), batch_size):
            yield from dataset[start : start + batch_size]["text"]

    tokenizer = train_bpe_tokenizer(batches(), vocab_size=vocab_size)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer
