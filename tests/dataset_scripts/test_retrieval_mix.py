import json

import pytest

from hf_select.dataset_scripts.proxy_task import clean_values
from hf_select.dataset_scripts.retrieval_mix import kv_lookup_documents, repeated_span_documents
from hf_select.testing import tiny_tokenizer

SENTENCES = [f"Sentence {i} says that topic {i * 7 % 13} matters a lot." for i in range(60)]


def test_repeated_spans_are_exact_repeats_of_corpus_text():
    texts = ["abcdefghij" * 50, "short"]
    docs = repeated_span_documents(texts, 5, min_chars=50, max_chars=120, seed=1)
    for doc in docs:
        first, second = doc.split("\n\n")
        assert first == second and first in texts[0] and 50 <= len(first) <= 120
    with pytest.raises(ValueError, match="no text"):
        repeated_span_documents(["x"], 1, min_chars=10)


def test_kv_documents_answer_by_copying_a_value_of_the_context():
    tok = tiny_tokenizer()
    values = clean_values(SENTENCES, tok, max_value_tokens=80)
    docs = kv_lookup_documents(values, tok, 7, context_tokens=900, key_lengths=(6, 32), seed=2)
    assert len(docs) == 7
    key_lengths = set()
    for doc in docs:
        obj = json.loads(doc.split("\n\n")[1])
        key = doc.rsplit("key: ", 1)[1].split("\n")[0]
        answer = doc.rsplit("answer: ", 1)[1]
        assert obj[key] == answer
        key_lengths.add(len(key))
    assert key_lengths == {6, 32}
    assert kv_lookup_documents(values, tok, 7, context_tokens=900, key_lengths=(6, 32), seed=2) == docs


def test_multi_query_documents_answer_every_line_from_the_object_within_budget():
    tok = tiny_tokenizer()
    values = clean_values(SENTENCES, tok, max_value_tokens=80)
    docs = kv_lookup_documents(values, tok, 4, context_tokens=600, key_lengths=(4, 8), seed=3, queries=64)
    assert len(docs) == 4
    for doc in docs:
        assert len(tok(doc).input_ids) <= 600
        head, tail = doc.split("}\n\n", 1)
        obj = json.loads(head.split("\n\n", 1)[1] + "}")
        lines = tail.split("\n")
        assert len(lines) >= 4 and len(lines) % 2 == 0
        for key_line, answer_line in zip(lines[::2], lines[1::2]):
            key = key_line.removeprefix("key: ")
            assert obj[key] == answer_line.removeprefix("answer: ")
        assert len(obj) >= 4 and {len(k) for k in obj} <= {4, 8}
    again = kv_lookup_documents(values, tok, 4, context_tokens=600, key_lengths=(4, 8), seed=3, queries=64)
    assert again == docs
