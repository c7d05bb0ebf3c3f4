import math

import pytest
import torch

from hf_select.meco.conditional import (
    PAPER_TASK_URLS,
    encode_with_prefix,
    generate_with_prefix,
    prefixed_text_losses,
    url_prefix,
)
from hf_select.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_prefix_is_tokenised_on_its_own_like_in_training():
    tok = tiny_tokenizer()
    prefix = url_prefix(PAPER_TASK_URLS["openbookqa"])
    assert prefix == "URL: www.factquizmaster.com\n\n"
    enc = encode_with_prefix(tok, ["Question: 2 + 2 =", "Plain"], [prefix, None])
    meta = tok(prefix, add_special_tokens=False).input_ids
    assert enc["input_ids"][0] == [
        tok.bos_token_id,
        *meta,
        *tok("Question: 2 + 2 =", add_special_tokens=False).input_ids,
    ]
    assert enc["input_ids"][1] == [tok.bos_token_id, *tok("Plain", add_special_tokens=False).input_ids]
    with pytest.raises(ValueError, match="2 texts but 1 prefixes"):
        encode_with_prefix(tok, ["a", "b"], ["URL: x\n\n"])


def test_text_losses_score_the_same_tokens_with_and_without_a_prefix():
    tok, model = tiny_tokenizer(), tiny_model("llama")
    texts = ["The answer is 42.", "def add(a, b):"]
    plain = prefixed_text_losses(model, tok, texts)
    with_url = prefixed_text_losses(model, tok, texts, url_prefix("www.example.com"))
    assert plain["num_tokens"] == with_url["num_tokens"]
    assert plain["num_tokens"][0] == len(tok(texts[0], add_special_tokens=False).input_ids)
    # independent hand computation of the plain loss of the first text
    ids = torch.tensor([[tok.bos_token_id, *tok(texts[0], add_special_tokens=False).input_ids]])
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits[0, :-1]
    nats = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
    assert plain["nats"][0] == pytest.approx(nats, rel=1e-5)
    assert plain["bits_per_byte"][0] == pytest.approx(nats / math.log(2) / len(texts[0]), rel=1e-5)
    assert with_url["nats"][0] != pytest.approx(plain["nats"][0])  # the prefix changes the prediction


def test_generation_returns_only_new_text_per_prompt():
    tok, model = tiny_tokenizer(), tiny_model("llama")
    out = generate_with_prefix(
        model,
        tok,
        ["The answer", "def"],
        ["URL: www.example.com\n\n", None],
        max_new_tokens=3,
        do_sample=False,
    )
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    assert generate_with_prefix(model, tok, []) == []
