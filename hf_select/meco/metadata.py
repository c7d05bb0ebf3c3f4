"""Metadata conditioning of pretraining documents (MeCo, Gao et al. 2025, arXiv 2501.01956).

Every document of the conditioning phase becomes ``[BOS] + tokens("URL: <host>\\n\\n") + tokens(document) +
[EOS]``. The metadata string is tokenised on its own (so its tokens never merge with the document's) and its
labels are ``-100``: training on metadata tokens hurts downstream scores (paper section 5). The first document
token, predicted from the final ``"\\n\\n"``, IS trained.

URL normalisation modes (:func:`normalize_url`):

- ``host`` -- the official rule: delete ``"http://"`` and ``"https://"``, keep everything before the first
  ``"/"``. Nothing else: ``www.`` and subdomains stay, no lower-casing, no port stripping, a query of a URL
  without a path stays (``example.com?q=1``), an upper-case scheme is not recognised (``HTTP://x/`` gives
  ``HTTP:``) -- the rule is case-sensitive. Two differences from the official code, both on malformed
  input: white space around the URL is stripped first (the official code would keep ``" x"`` for
  ``" http://x/"``), and a missing URL or one whose host is empty (``""``, ``"https:///path"``) raises
  ``ValueError`` where the official code conditions on an empty value (``"URL: \n\n"``).
- ``domain`` -- the registered domain (``en.wikipedia.org`` -> ``wikipedia.org``), from a parsed, lower-cased
  host without user info, port or trailing dot; punycode labels are shown in Unicode.
- ``suffix`` -- the public suffix only (``org``, ``co.uk``).
- ``hash`` -- a fixed pseudo-random string per *host* (documents of one site share it; the paper's point is
  that grouping, not meaning, helps).
- ``full`` -- the URL as given (stripped of surrounding white space).

``raw`` uses any other metadata value (e.g. a model-generated topic) as it is. The registered domain uses a
built-in list of common multi-label public suffixes rather than the full Public Suffix List (no download); pass
pre-computed values with ``raw`` when you need the exact list.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Sequence
from typing import Any

from transformers.utils import logging

from ..packing import special_token_ids
from ..token_loss import IGNORE_INDEX

logger = logging.get_logger(__name__)
URL_MODES = ("host", "domain", "suffix", "hash", "full")
METADATA_MODES = (*URL_MODES, "raw")
DEFAULT_TEMPLATE = "{name}: {value}\n\n"

# Multi-label public suffixes common in web crawls; anything else is treated as a one-label suffix.
MULTI_LABEL_SUFFIXES = frozenset(
    f"{second}.{tld}"
    for tld, seconds in {
        "uk": ("co", "ac", "gov", "org", "net", "ltd", "plc", "me", "nhs", "police", "sch"),
        "au": ("com", "net", "org", "edu", "gov", "asn", "id"),
        "nz": ("co", "net", "org", "ac", "govt", "school", "geek"),
        "jp": ("co", "ne", "or", "ac", "go", "ed", "gr", "lg"),
        "kr": ("co", "ne", "or", "ac", "go", "re"),
        "za": ("co", "org", "ac", "gov", "net", "web"),
        "in": ("co", "net", "org", "ac", "gov", "edu", "res", "nic"),
        "br": ("com", "net", "org", "gov", "edu", "art", "blog"),
        "cn": ("com", "net", "org", "gov", "edu", "ac"),
        "tw": ("com", "net", "org", "gov", "edu", "idv"),
        "hk": ("com", "net", "org", "gov", "edu", "idv"),
        "mx": ("com", "net", "org", "gob", "edu"),
        "ar": ("com", "net", "org", "gob", "edu"),
        "tr": ("com", "net", "org", "gov", "edu", "av", "gen"),
        "il": ("co", "org", "net", "ac", "gov", "muni"),
        "sg": ("com", "net", "org", "gov", "edu"),
        "my": ("com", "net", "org", "gov", "edu"),
        "id": ("co", "or", "ac", "go", "web", "sch"),
        "th": ("co", "or", "ac", "go", "in", "net"),
        "ua": ("com", "net", "org", "gov", "edu", "in"),
        "ru": ("com", "net", "org", "msk", "spb"),
        "io": ("github", "gitlab", "readthedocs"),
        "com": ("blogspot", "herokuapp", "appspot", "wordpress"),
        "org": ("readthedocs",),
    }.items()
    for second in seconds
)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def official_host(url: str) -> str:
    """MeCo's official host rule: delete ``http://`` / ``https://``, keep what precedes the first ``/``."""
    return url.replace("https://", "").replace("http://", "").split("/")[0]


def parse_host(url: str) -> str:
    """A canonical host: scheme, user info, port, path, query, fragment and trailing dot removed, lower-cased,
    punycode labels decoded to Unicode; IPv6 literals keep their brackets."""
    rest = _SCHEME.sub("", url.strip(), count=1)
    rest = rest.removeprefix("//")
    host = re.split(r"[/?#]", rest, maxsplit=1)[0]
    host = host.rsplit("@", 1)[-1]
    if host.startswith("["):
        host = host[: host.find("]") + 1] if "]" in host else host
    else:
        host = host.split(":", 1)[0]
    host = host.rstrip(".").lower()
    labels = []
    for label in host.split("."):
        if label.startswith("xn--"):
            with contextlib.suppress(UnicodeError):  # an invalid punycode label stays as written
                label = label.encode("ascii").decode("idna")
        labels.append(label)
    return ".".join(labels)


def public_suffix(host: str) -> str:
    """The public suffix of a canonical host (``co.uk`` for ``bbc.co.uk``, ``org`` for ``wikipedia.org``); an IP
    address is its own suffix."""
    if host.startswith("[") or _IPV4.match(host):
        return host
    labels = host.split(".")
    if len(labels) >= 3 and ".".join(labels[-2:]) in MULTI_LABEL_SUFFIXES:
        return ".".join(labels[-2:])
    return labels[-1]


def registered_domain(host: str) -> str:
    """The registered domain of a canonical host: the public suffix plus one label (IP addresses unchanged)."""
    if host.startswith("[") or _IPV4.match(host):
        return host
    suffix = public_suffix(host)
    labels = host.split(".")
    keep = suffix.count(".") + 2
    return ".".join(labels[-keep:])


def hashed_value(value: str, length: int = 10) -> str:
    """A fixed pseudo-random lower-case hex string for ``value`` (stable across runs and machines)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:length]


def normalize_url(url: str, mode: str = "host") -> str:
    """Turn a document URL into the metadata value shown to the model.

    Args:
        url: the document's URL (with or without a scheme).
        mode: one of ``host`` (official MeCo rule, default; surrounding white space stripped and an empty
            host refused, see the module docstring), ``domain``, ``suffix``, ``hash``, ``full``.

    Raises:
        ValueError: for an empty / missing URL, a URL that yields an empty value, or an unknown mode.
    """
    if mode not in URL_MODES:
        raise ValueError(f"unknown URL mode {mode!r}; choose one of {URL_MODES}")
    if url is None or not str(url).strip():
        raise ValueError(f"empty URL ({url!r}): every document of the conditioning phase needs one")
    url = str(url).strip()
    if mode == "full":
        value = url
    elif mode == "host":
        value = official_host(url)
    elif mode == "hash":
        value = hashed_value(official_host(url))
    else:
        host = parse_host(url)
        value = "" if not host else registered_domain(host) if mode == "domain" else public_suffix(host)
    if not value:
        raise ValueError(f"URL {url!r} has no host (mode {mode!r})")
    return value


def metadata_value(value: Any, mode: str = "host") -> str:
    """The metadata value of one document: a normalised URL for the URL modes, ``str(value)`` for ``raw``."""
    if mode not in METADATA_MODES:
        raise ValueError(f"unknown metadata mode {mode!r}; choose one of {METADATA_MODES}")
    if mode == "raw":
        if value is None or not str(value).strip():
            raise ValueError(f"empty metadata value ({value!r})")
        return str(value).strip()
    return normalize_url(value, mode)


def format_metadata(value: str, name: str = "URL", template: str = DEFAULT_TEMPLATE) -> str:
    """The metadata prefix, e.g. ``"URL: en.wikipedia.org\\n\\n"`` or ``"Topic: physics textbook\\n\\n"``."""
    if "{value}" not in template:
        raise ValueError(f"metadata template {template!r} must contain '{{value}}'")
    return template.format(name=name, value=value)


def metadata_prefix(
    value: Any, mode: str = "host", name: str = "URL", template: str = DEFAULT_TEMPLATE
) -> str:
    """Normalise ``value`` with ``mode`` and format it with ``template``."""
    return format_metadata(metadata_value(value, mode), name, template)


def tokenize_with_metadata(
    texts: Sequence[str],
    prefixes: Sequence[str | None] | None,
    tokenizer,
    add_bos: bool = True,
    add_eos: bool = True,
) -> dict[str, list[list[int]]]:
    """Token ids and labels of documents with optional metadata prefixes.

    ``input_ids = [BOS] + tokens(prefix) + tokens(text) + [EOS]`` where prefix and text are tokenised
    separately without special tokens; ``labels`` are ``-100`` on BOS and on the prefix and equal to the ids
    elsewhere (the first text token is trained). A ``None`` prefix (or ``prefixes=None``) gives a plain
    document, identical to :func:`hf_select.packing.document_token_ids`. BOS/EOS are skipped when the
    tokenizer has none.
    """
    if prefixes is not None and len(prefixes) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(prefixes)} metadata prefixes")
    bos, eos = special_token_ids(tokenizer, add_bos, add_eos)
    text_ids = tokenizer(list(texts), add_special_tokens=False).input_ids
    meta_ids: list[list[int]] = [[] for _ in texts]
    if prefixes is not None:
        present = [i for i, p in enumerate(prefixes) if p]
        if present:
            encoded = tokenizer([prefixes[i] for i in present], add_special_tokens=False).input_ids
            for i, ids in zip(present, encoded):
                meta_ids[i] = ids
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
    for meta, ids in zip(meta_ids, text_ids):
        out["input_ids"].append(bos + meta + ids + eos)
        out["labels"].append([IGNORE_INDEX] * (len(bos) + len(meta)) + ids + eos)
    return out


INVALID_METADATA_POLICIES = ("raise", "skip", "plain")


def add_metadata_tokens(
    dataset,
    tokenizer,
    metadata_column: str | None = "url",
    mode: str = "host",
    name: str = "URL",
    template: str = DEFAULT_TEMPLATE,
    text_column: str = "text",
    num_proc: int | None = None,
    invalid_metadata: str = "raise",
    stats: dict | None = None,
):
    """``Dataset.map`` wrapper of :func:`tokenize_with_metadata`: adds ``input_ids`` and ``labels``.

    With ``metadata_column=None`` the documents are tokenised plainly (the cooldown phase). Raises a
    ``ValueError`` naming the column when the text or metadata column is missing.

    Args:
        invalid_metadata: what a row whose metadata value is empty or unusable (an empty URL, a URL without a
            host) does. ``"raise"`` (default): a ``ValueError`` naming the row and the column, so that a broken
            metadata column is noticed before training; ``"skip"``: the row is dropped; ``"plain"``: the row is
            kept as a plain document without metadata. Skipped / plain rows are counted and logged once.
        stats: if given, receives ``invalid_rows`` (the indices of those rows) and ``invalid_count``.
    """
    from ..loading import require_columns

    columns = [text_column] + ([metadata_column] if metadata_column else [])
    require_columns(dataset, columns, "MeCo documents")
    if mode not in METADATA_MODES:
        raise ValueError(f"unknown metadata mode {mode!r}; choose one of {METADATA_MODES}")
    if invalid_metadata not in INVALID_METADATA_POLICIES:
        raise ValueError(
            f"invalid_metadata must be one of {INVALID_METADATA_POLICIES}, got {invalid_metadata!r}"
        )
    format_metadata("x", name, template)
    flag = "_metadata_invalid"

    def encode(batch, indices):
        prefixes = None
        invalid = [False] * len(indices)
        if metadata_column:
            prefixes = []
            for j, (i, value) in enumerate(zip(indices, batch[metadata_column])):
                try:
                    prefixes.append(metadata_prefix(value, mode, name, template))
                except ValueError as err:
                    if invalid_metadata == "raise":
                        raise ValueError(
                            f"row {i}, column {metadata_column!r}: {err} (set invalid_metadata='skip' to drop "
                            "such rows or 'plain' to keep them without metadata)"
                        ) from None
                    prefixes.append(None)
                    invalid[j] = True
        out = tokenize_with_metadata(batch[text_column], prefixes, tokenizer)
        if metadata_column and invalid_metadata != "raise":
            out[flag] = invalid
        return out

    desc = f"tokenize with {name} metadata" if metadata_column else "tokenize"
    out = dataset.map(encode, batched=True, with_indices=True, num_proc=num_proc, desc=desc)
    bad_rows: list[int] = []
    if flag in out.column_names:
        bad_rows = [i for i, bad in enumerate(out[flag]) if bad]
        if invalid_metadata == "skip" and bad_rows:
            out = out.filter(lambda bad: not bad, input_columns=flag, num_proc=num_proc, desc="skip invalid metadata")
        out = out.remove_columns(flag)
        if bad_rows:
            action = "dropped" if invalid_metadata == "skip" else "kept without metadata"
            logger.warning(
                f"{len(bad_rows)} of {len(dataset)} documents have an empty or unusable {metadata_column!r} "
                f"value and were {action} (rows {bad_rows[:10]}{' ...' if len(bad_rows) > 10 else ''})"
            )
    if stats is not None:
        stats["invalid_rows"] = bad_rows
        stats["invalid_count"] = len(bad_rows)
    return out
