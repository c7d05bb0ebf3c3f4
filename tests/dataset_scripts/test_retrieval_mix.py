import json
import re

import pytest

from hf_select.dataset_scripts.proxy_task import clean_values
from hf_select.dataset_scripts.retrieval_mix import kv_lookup_documents, repeated_span_documents
from hf_select.testing import tiny_tokenizer

QUERY = re.compile(r'(?m)^key: "(\w+)"\nanswer:\n(.*)$')
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
        (key, answer), *_ = reversed(QUERY.findall(doc))
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
        blocks = QUERY.findall(tail)
        assert len(blocks) >= 4 and tail == "\n".join(f'key: "{k}"\nanswer:\n{v}' for k, v in blocks)
        for key, answer in blocks:
            assert obj[key] == answer
        assert len(obj) >= 4 and {len(k) for k in obj} <= {4, 8}
    again = kv_lookup_documents(values, tok, 4, context_tokens=600, key_lengths=(4, 8), seed=3, queries=64)
    assert again == docs


def test_copy_rows_label_the_filler_and_the_repeat_but_not_the_first_occurrence():
    from hf_select.dataset_scripts.retrieval_mix import IGNORE_INDEX, copy_rows

    stream = list(range(10, 510))  # distinct tokens: a piece and its filler are recognisable
    rows = copy_rows(stream, 3, seq_length=12, max_distance=0, span=(3, 3), seed=0)
    for row in rows:
        a = row["input_ids"][0]
        assert row["input_ids"] == [a, a + 1, a + 2] * 2 + row["input_ids"][6:]
        assert row["labels"][:6] == [IGNORE_INDEX] * 4 + [a + 1, a + 2]
        assert row["position_ids"] == list(range(12))
    rows = copy_rows(stream, 20, seq_length=64, max_distance=9, span=(2, 5), seed=1)
    for row in rows:
        ids, labels = row["input_ids"], row["labels"]
        assert len(ids) == len(labels) == 64
        for i, label in enumerate(labels):
            if label == IGNORE_INDEX:
                continue
            assert label == ids[i]
            filler = i > 0 and ids[i] == ids[i - 1] + 1
            repeat = ids[i] in ids[:i]  # the repeat's earlier occurrence is in the row
            assert filler or repeat
    assert copy_rows(stream, 20, seq_length=64, max_distance=9, span=(2, 5), seed=1) == rows
    with pytest.raises(ValueError, match="fewer than one piece"):
        copy_rows(stream[:5], 1, seq_length=8, max_distance=4)


def test_answer_labelled_rows_label_exactly_the_answer_values():
    import random

    from hf_select.dataset_scripts.retrieval_mix import (
        IGNORE_INDEX,
        answer_labelled_row,
        multi_query_document,
    )

    tok = tiny_tokenizer()
    values = clean_values(SENTENCES, tok, max_value_tokens=80)
    doc = multi_query_document(values, tok, 600, 6, random.Random(0), max_queries=8)
    row = answer_labelled_row(doc, tok, max_length=1000)
    assert row["input_ids"][0] == tok.bos_token_id and row["position_ids"] == list(
        range(len(row["input_ids"]))
    )
    labelled = [t for t in row["labels"] if t != IGNORE_INDEX]
    answers = [answer for _, answer in QUERY.findall(doc)]
    assert len(answers) >= 4 and tok.decode(labelled) == "".join(answers)
    short = answer_labelled_row(doc, tok, max_length=20)
    assert len(short["input_ids"]) == len(short["labels"]) == 20
