import json
import re

import pytest

from hf_select.attention_influence.proxy_task import build_proxy_samples, clean_values
from hf_select.testing import tiny_tokenizer

SENTENCES = [f"Sentence number {i} talks about topic {i * 7 % 13} and more." for i in range(40)]


@pytest.fixture(scope="module")
def samples():
    return build_proxy_samples(
        clean_values(SENTENCES, tiny_tokenizer(), max_value_tokens=80),
        tiny_tokenizer(),
        num_samples=20,
        context_tokens=1500,
        key_length=12,
        seed=3,
    )


def parse(sample):
    body = sample["prompt"].split("\n\n")[1]
    return json.loads(body)


def test_answer_occurs_exactly_once_in_the_context(samples):
    for s in samples:
        context = s["prompt"].split("}\n\n")[0]
        value = s["answer"][:-1]
        assert s["answer"].endswith('"') and context.count(value) == 1
        assert s["prompt"][slice(*s["value_span"])] == value


def test_answer_tokens_are_the_tokens_after_the_key_in_the_object(samples):
    # the layout's point: the query line is the object's own "<key>": " so the answer is a verbatim copy
    for s in samples:
        query_key = re.search(r'\n"(\w+)": "$', s["prompt"]).group(1)
        assert f'"{query_key}": "{s["answer"]}' in s["prompt"].split("}\n\n")[0] + "}"
        assert parse(s)[query_key] + '"' == s["answer"]


def test_keys_unique_and_alphanumeric(samples):
    for s in samples:
        obj = parse(s)
        assert len(obj) == s["num_pairs"] >= 4
        assert all(re.fullmatch(r"[A-Za-z0-9]{12}", k) for k in obj)


def test_budget_respected_and_query_not_a_demo(samples):
    tok = tiny_tokenizer()
    for s in samples:
        assert len(tok(s["prompt"] + s["answer"]).input_ids) <= 1500
        demos = s["prompt"].split("}\n\n")[1]
        demo_keys = re.findall(r'(?m)^"(\w+)": ".+"$', demos)
        query_key = re.search(r'\n"(\w+)": "$', s["prompt"]).group(1)
        assert query_key not in demo_keys and len(demo_keys) == 3


def test_seeded_and_positions_vary(samples):
    again = build_proxy_samples(
        clean_values(SENTENCES, tiny_tokenizer(), max_value_tokens=80),
        tiny_tokenizer(),
        num_samples=20,
        context_tokens=1500,
        key_length=12,
        seed=3,
    )
    assert again == samples
    assert len({s["query_index"] for s in samples}) > 2


def test_budget_too_small():
    with pytest.raises(ValueError, match="too small"):
        build_proxy_samples(SENTENCES, tiny_tokenizer(), num_samples=1, context_tokens=50)
