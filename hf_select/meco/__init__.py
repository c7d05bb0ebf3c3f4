"""MeCo, metadata conditioning then cooldown (Gao et al., 2025): URL prefixes, loss-masked, then plain data in
the same run; conditional inference. The trainer pair is :mod:`hf_select.trainer_ext.meco_trainer` /
``meco_config``.

* :mod:`.metadata` -- URL normalisation and the loss-masked metadata prefix;
* :mod:`.conditional` -- generation and losses conditioned on a URL.
"""

from .conditional import generate_with_prefix, prefixed_text_losses, url_prefix
from .metadata import (
    add_metadata_tokens,
    format_metadata,
    metadata_prefix,
    normalize_url,
    tokenize_with_metadata,
)

__all__ = [
    "add_metadata_tokens",
    "format_metadata",
    "generate_with_prefix",
    "metadata_prefix",
    "normalize_url",
    "prefixed_text_losses",
    "tokenize_with_metadata",
    "url_prefix",
]
