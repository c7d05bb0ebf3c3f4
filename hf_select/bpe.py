"""A byte-level BPE tokenizer trained offline with ``tokenizers`` (the demo world and the test fixtures)."""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2, with_bos: bool = True
):
    """Train a byte-level BPE (GPT-2 style pre-tokenisation, no prefix space) with ``<pad> <s> </s> <unk>``
    as ids 0-3; with ``with_bos`` encodings start with ``<s>`` like Llama tokenizers (else no special token is
    added, like GPT-2). Returns a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must cover the 256 bytes and the special tokens, got {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if with_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=1 << 20,
    )
