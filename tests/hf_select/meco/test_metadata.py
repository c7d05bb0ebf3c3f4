import re

import pytest
from datasets import Dataset

from hf_select.meco.metadata import (
    add_metadata_tokens,
    format_metadata,
    metadata_prefix,
    normalize_url,
    tokenize_with_metadata,
)
from hf_select.testing import tiny_tokenizer

# url -> (host, domain, suffix). "host" is the official rule verbatim: strip http:// and https://, cut at the
# first "/"; nothing else (case, port, user info, query without a path all survive).
URL_TABLE = [
    ("https://en.wikipedia.org/wiki/Python", "en.wikipedia.org", "wikipedia.org", "org"),
    ("http://www.theguardian.com/uk", "www.theguardian.com", "theguardian.com", "com"),
    ("https://www.example.com:8080/a/b?c=d", "www.example.com:8080", "example.com", "com"),
    ("https://example.com?q=1", "example.com?q=1", "example.com", "com"),
    ("https://example.com", "example.com", "example.com", "com"),
    ("https://example.com/", "example.com", "example.com", "com"),
    ("https://WWW.Example.COM/Path", "WWW.Example.COM", "example.com", "com"),
    ("HTTPS://www.example.com/x", "HTTPS:", "example.com", "com"),  # official rule is case-sensitive
    ("www.example.org/page.html", "www.example.org", "example.org", "org"),
    ("docs.python.org", "docs.python.org", "python.org", "org"),
    ("https://news.bbc.co.uk/sport", "news.bbc.co.uk", "bbc.co.uk", "co.uk"),
    ("https://bücher.de/katalog", "bücher.de", "bücher.de", "de"),
    ("http://xn--bcher-kva.de/x", "xn--bcher-kva.de", "bücher.de", "de"),
    ("https://user:pw@Mail.Example.net:443/inbox", "user:pw@Mail.Example.net:443", "example.net", "net"),
    ("http://192.168.1.10:8000/status", "192.168.1.10:8000", "192.168.1.10", "192.168.1.10"),
    ("https://example.com#frag", "example.com#frag", "example.com", "com"),
    ("  https://sub.example.com./x  ", "sub.example.com.", "example.com", "com"),
    ("ftp://files.example.com/pub", "ftp:", "example.com", "com"),
]


@pytest.mark.parametrize("url,host,domain,suffix", URL_TABLE)
def test_url_modes_on_real_url_shapes(url, host, domain, suffix):
    assert normalize_url(url, "host") == host
    assert normalize_url(url, "domain") == domain
    assert normalize_url(url, "suffix") == suffix
    assert normalize_url(url, "full") == url.strip()


def test_hash_is_stable_groups_a_host_and_separates_hosts():
    a = normalize_url("https://en.wikipedia.org/wiki/A", "hash")
    assert a == normalize_url("https://en.wikipedia.org/wiki/B", "hash")  # same host, same string
    assert a != normalize_url("https://de.wikipedia.org/wiki/A", "hash")
    assert a == "b71288d6f0"  # sha256("en.wikipedia.org")[:10], fixed across runs and machines
    for url in ("https://x.org/1", "http://www.y.com", "z.net/p"):  # every host: 10 lowercase hex digits
        assert re.fullmatch(r"[0-9a-f]{10}", normalize_url(url, "hash"))


@pytest.mark.parametrize("bad", ["", "   ", None, "https://", "http:///path"])
def test_empty_url_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="URL"):
        normalize_url(bad)


def test_unknown_mode_and_bad_template():
    with pytest.raises(ValueError, match="mode"):
        normalize_url("https://a.com", "tld")
    with pytest.raises(ValueError, match="value"):
        format_metadata("x", template="{name}\n\n")


def test_prefix_formats_and_other_metadata_kinds():
    assert metadata_prefix("https://en.wikipedia.org/wiki/X") == "URL: en.wikipedia.org\n\n"
    assert metadata_prefix("physics textbook", "raw", "Topic") == "Topic: physics textbook\n\n"
    assert metadata_prefix("a.com", "full", template="[{name}={value}] ") == "[URL=a.com] "


def test_labels_are_masked_exactly_on_bos_and_metadata():
    tok = tiny_tokenizer()
    text, prefix = "The answer is 42.", "URL: www.example.com\n\n"
    out = tokenize_with_metadata([text, text], [prefix, None], tok)
    meta = tok(prefix, add_special_tokens=False).input_ids
    body = tok(text, add_special_tokens=False).input_ids
    # independent construction of the expected rows
    assert out["input_ids"][0] == [tok.bos_token_id, *meta, *body, tok.eos_token_id]
    assert out["labels"][0] == [-100] * (1 + len(meta)) + body + [tok.eos_token_id]
    assert out["input_ids"][1] == [tok.bos_token_id, *body, tok.eos_token_id]
    assert out["labels"][1] == [-100, *body, tok.eos_token_id]
    first_doc_token = 1 + len(meta)
    assert out["labels"][0][first_doc_token] == body[0] != -100  # the first document token is trained


def test_dataset_wrapper_and_missing_column_or_empty_url():
    tok = tiny_tokenizer()
    docs = Dataset.from_dict({"text": ["a b", "c d"], "url": ["https://x.org/1", "y.com"]})
    out = add_metadata_tokens(docs, tok)
    assert out[1]["input_ids"][1 : 1 + len(tok("URL: y.com\n\n", add_special_tokens=False).input_ids)] == (
        tok("URL: y.com\n\n", add_special_tokens=False).input_ids
    )
    with pytest.raises(ValueError, match=r"missing column\(s\) \['source_url'\]"):
        add_metadata_tokens(docs, tok, metadata_column="source_url")
    bad = Dataset.from_dict({"text": ["a", "b"], "url": ["https://x.org", ""]})
    with pytest.raises(ValueError, match=r"row 1, column 'url': empty URL"):
        add_metadata_tokens(bad, tok)


@pytest.mark.parametrize("policy", ["skip", "plain"])
def test_one_empty_url_does_not_abort_the_map_under_a_row_policy(policy, caplog):
    """The row-level policy drops (or keeps plainly) the bad row and counts it."""
    tok = tiny_tokenizer()
    docs = Dataset.from_dict({"text": ["a b", "c d", "e f"], "url": ["https://x.org/1", "", "y.com"]})
    stats = {}
    out = add_metadata_tokens(docs, tok, invalid_metadata=policy, stats=stats)
    assert stats == {"invalid_rows": [1], "invalid_count": 1}
    good = add_metadata_tokens(docs.select([0, 2]), tok)
    if policy == "skip":
        assert out["input_ids"] == good["input_ids"] and out["labels"] == good["labels"]
    else:
        plain = add_metadata_tokens(docs.select([1]), tok, metadata_column=None)
        assert out["input_ids"] == [good["input_ids"][0], plain["input_ids"][0], good["input_ids"][1]]
    assert "_metadata_invalid" not in out.column_names
    with pytest.raises(ValueError, match=r"row 1, column 'url': empty URL.*invalid_metadata='skip'"):
        add_metadata_tokens(docs, tok, invalid_metadata="raise")
    with pytest.raises(ValueError, match="invalid_metadata must be"):
        add_metadata_tokens(docs, tok, invalid_metadata="ignore")


def test_host_mode_differs_from_the_official_rule_only_on_malformed_urls():
    """The documented differences of ``host`` from the official rule: white space stripped, empty host refused
    (the official code would condition on ``"URL: \\n\\n"``); well-formed URLs give the official value."""
    from hf_select.meco.metadata import official_host

    for url in ("https://en.wikipedia.org/wiki/X", "http://Example.com:8080/a", "www.site.org?q=1"):
        assert normalize_url(url, "host") == official_host(url)
    assert official_host(" http://x.org/p") == " x.org" and normalize_url(" http://x.org/p", "host") == "x.org"
    assert official_host("https:///path") == ""
    with pytest.raises(ValueError, match="no host"):
        normalize_url("https:///path", "host")
