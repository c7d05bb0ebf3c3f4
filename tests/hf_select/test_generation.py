"""The one greedy-generation function against decoding by hand: one token at a time from the full logits."""

import pytest
import torch

from hf_select.generation import generate_greedy
from hf_select.testing import tiny_model, tiny_tokenizer

PROMPTS = ["The quick brown", "Key: value", "a", "Once upon a time there was"]


def _by_hand(model, tokenizer, ids: list[int], budget: int) -> list[int]:
    """Greedy new tokens of one prompt, no batch, no KV cache, cut at the first EOS."""
    eos = {tokenizer.eos_token_id, model.generation_config.eos_token_id} - {None}
    new: list[int] = []
    for _ in range(budget):
        with torch.no_grad():
            token = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
        if token in eos:
            break
        new.append(token)
    return new


@pytest.fixture(scope="module")
def setup():
    tokenizer = tiny_tokenizer()
    model = tiny_model("llama", seed=3).eval()
    ids = [tokenizer(p).input_ids for p in PROMPTS]
    return model, tokenizer, ids


@pytest.mark.parametrize("batch_size", [None, 1, 3])
def test_ids_equal_decoding_by_hand_for_every_batching(setup, batch_size):
    model, tokenizer, ids = setup
    budgets = [5, 3, 6, 4]
    got = generate_greedy(model, tokenizer, input_ids=ids, max_new_tokens=budgets, batch_size=batch_size, decode=False)
    assert got == [_by_hand(model, tokenizer, row, b) for row, b in zip(ids, budgets)]


def test_texts_from_prompts_equal_decoded_ids(setup):
    model, tokenizer, ids = setup
    texts = generate_greedy(model, tokenizer, PROMPTS, 5, batch_size=2)
    assert texts == [tokenizer.decode(_by_hand(model, tokenizer, row, 5), skip_special_tokens=True) for row in ids]


def test_stop_gets_the_prompt_index_in_any_batch_order(setup):
    model, tokenizer, ids = setup
    full = [_by_hand(model, tokenizer, row, 6) for row in ids]
    got = generate_greedy(model, tokenizer, input_ids=ids, max_new_tokens=6, batch_size=3, decode=False,
                          stop=lambda index, new: len(new) >= index + 1)  # fmt: skip
    assert got == [row[: i + 1] for i, row in enumerate(full)]


def test_stop_strings_cut_like_lm_eval_generate_until(setup):
    model, tokenizer, ids = setup
    full = [tokenizer.decode(_by_hand(model, tokenizer, row, 8), skip_special_tokens=True) for row in ids]
    # a stop string that occurs in at least one continuation, so the cut is exercised
    stop = next(ch for ch in sorted(set("".join(full)), key=lambda c: -"".join(full).count(c)) if ch.strip())
    got = generate_greedy(model, tokenizer, input_ids=ids, max_new_tokens=8, stop_strings=[stop], cut_at_stop=True)
    assert got == [text.split(stop)[0] for text in full]
    assert any(stop in text for text in full)


def test_bad_budgets_are_refused(setup):
    model, tokenizer, ids = setup
    with pytest.raises(ValueError, match="one positive int per prompt"):
        generate_greedy(model, tokenizer, input_ids=ids, max_new_tokens=[1, 2])
    assert generate_greedy(model, tokenizer, []) == []
