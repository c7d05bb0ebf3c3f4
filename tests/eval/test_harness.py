import json
import math

import numpy as np
import pytest
import torch

from hf_select.eval import evaluate, load_task
from hf_select.eval import harness as harness_module
from hf_select.testing import tiny_model, tiny_tokenizer
from hf_select.text_metrics import exact_match


def hand_loglik(model, tokenizer, context, continuation, max_length=None):
    """Sum of log p(continuation | context) from the full logits of one unpadded forward pass (lm-eval rules)."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    ctx = tokenizer(context).input_ids
    cont = tokenizer(context + continuation).input_ids[len(ctx) :]
    ids = ctx + cont
    if max_length:
        ids = ids[-(max_length + 1) :]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].double(), -1)
    positions = range(len(ids) - 1 - len(cont), len(ids) - 1)
    return sum(logp[p, t].item() for p, t in zip(positions, cont))


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize(
    ("family", "share"), [("llama", True), ("gpt2", True), ("gpt_neox", True), ("llama", False)]
)
def test_multiple_choice_matches_full_logits(family, share, tok, mc_records):
    model = tiny_model(family)
    records = mc_records(4, seed=3, min_choices=3, max_choices=4)
    task = {"name": "mc", "type": "multiple_choice", "data": {"test": records}}
    out = evaluate(
        model, tok, [task], batch_size=4, share_context=share, log_samples=True, show_progress=False
    )
    accs, norms = [], []
    for record, sample in zip(records, out["samples"]["mc"]):
        hand = [hand_loglik(model, tok, record["query"], " " + c) for c in record["choices"]]
        np.testing.assert_allclose(sample["loglikelihoods"], hand, atol=2e-4)
        lengths = np.array([len(c) for c in record["choices"]], dtype=float)
        accs.append(float(np.argmax(hand) == record["gold"]))
        norms.append(float(np.argmax(np.array(hand) / lengths) == record["gold"]))
    assert out["results"]["mc"]["acc"] == pytest.approx(np.mean(accs))
    assert out["results"]["mc"]["acc_norm"] == pytest.approx(np.mean(norms))
    assert out["results"]["mc"]["num_items"] == 4


def test_acc_norm_divides_by_choice_characters():
    from hf_select.eval import multiple_choice_metrics

    # raw argmax picks the short choice; per character the long one wins
    assert multiple_choice_metrics([-2.0, -3.0], ["ab", "abcdefgh"], gold=1) == {"acc": 0.0, "acc_norm": 1.0}


def test_truncated_contexts_match_lm_eval_left_truncation(tok):
    model = tiny_model("llama")
    records = [
        {
            "query": "Question: " + "the quick brown fox " * 6 + "?\nAnswer:",
            "choices": ["dog", "lazy box"],
            "gold": 0,
        }
    ]
    out = evaluate(
        model,
        tok,
        [{"name": "t", "type": "multiple_choice", "data": {"test": records}}],
        max_length=12,
        log_samples=True,
        show_progress=False,
    )
    hand = [
        hand_loglik(model, tok, records[0]["query"], " " + c, max_length=12) for c in records[0]["choices"]
    ]
    np.testing.assert_allclose(out["samples"]["t"][0]["loglikelihoods"], hand, atol=2e-4)


def test_gold_bpb_by_hand(tok):
    model = tiny_model("llama")
    records = [{"query": "2 + 2 =", "gold": "4, and 3 * 7 = 21."}, {"query": "The answer", "gold": "is 42"}]
    out = evaluate(
        model, tok, [{"name": "g", "type": "gold_bpb", "data": {"test": records}}], show_progress=False
    )
    nll = -sum(hand_loglik(model, tok, r["query"], " " + r["gold"]) for r in records)
    nbytes = sum(len((" " + r["gold"]).encode()) for r in records)
    assert out["results"]["g"]["bits_per_byte"] == pytest.approx(nll / math.log(2) / nbytes, rel=1e-5)


def test_generate_greedy_until_stop_by_hand(tok):
    model = tiny_model("llama", seed=1)
    records = [{"query": "Key: value pairs hold", "gold": "42"}, {"query": "The quick", "gold": "brown"}]
    task = {
        "name": "gen",
        "type": "generate",
        "data": {"test": records},
        "until": ["\n", "."],
        "max_gen_toks": 6,
    }
    out = evaluate(model, tok, [task], batch_size=2, log_samples=True, show_progress=False)
    for record, sample in zip(records, out["samples"]["gen"]):
        ids = tok(record["query"]).input_ids
        new = []
        for _ in range(6):  # greedy from full logits, one token at a time
            with torch.no_grad():
                new.append(int(model(torch.tensor([ids + new])).logits[0, -1].argmax()))
        text = tok.decode(new, skip_special_tokens=True).split("\n")[0].split(".")[0]
        assert sample["prediction"] == text
        assert sample["exact_match"] == exact_match(text, record["gold"])


def test_perplexity_per_domain_by_hand(tok):
    model = tiny_model("llama")
    records = [
        {"text": "def add(a, b):\n    return a + b", "domain": "code"},
        {"text": "The quick brown fox jumps.", "domain": "web"},
        {"text": "Pack my box with five dozen liquor jugs.", "domain": "web"},
    ]
    out = evaluate(
        model, tok, [{"name": "p", "type": "perplexity", "data": {"test": records}}], show_progress=False
    )
    stats = {}
    for r in records:
        # the document as lm-eval encodes it (the tokenizer's default special tokens) after the prefix token
        ids = [tok.bos_token_id] + tok(r["text"]).input_ids
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        nll = -sum(logp[i, ids[i + 1]].item() for i in range(len(ids) - 1))
        for d in ("all", r["domain"]):
            s = stats.setdefault(d, [0.0, 0, 0])
            s[0] += nll
            s[1] += len(ids) - 1
            s[2] += len(r["text"].encode())
    res = out["results"]["p"]
    for d, (nll, ntok, nbytes) in stats.items():
        got = res if d == "all" else res["domains"][d]
        assert got["bits_per_byte"] == pytest.approx(nll / math.log(2) / nbytes, rel=1e-5)
        assert got["token_perplexity"] == pytest.approx(math.exp(nll / ntok), rel=1e-5)


def test_perplexity_windows_predict_every_token_once():
    tokens = list(range(10, 33))
    windows = list(harness_module._perplexity_windows(tokens, 1, max_length=5))
    predicted = [t for _, cont in windows for t in cont]
    assert predicted == tokens
    for ctx, cont in windows:
        assert len(ctx) + len(cont) - 1 <= 5 and ctx  # fits the window, conditions on something
    assert windows[0][0] == [1]


def test_prefix_per_call_and_outputs_written(tmp_path, mc_task_file, tok):
    model = tiny_model("llama")
    out = evaluate(
        model,
        tok,
        [mc_task_file],
        prefix="URL: www.quiz.com\n\n",
        log_samples=True,
        output_dir=tmp_path / "res",
        show_progress=False,
        limit=3,
    )
    assert all(
        s["context"].startswith("URL: www.quiz.com\n\nAnswer the questions.\n\n")
        for s in out["samples"]["mc"]
    )
    assert out["results"]["mc"]["num_items"] == 3
    saved = json.loads((tmp_path / "res/results.json").read_text())
    assert saved["results"]["mc"]["acc"] == out["results"]["mc"]["acc"]
    assert "| mc | acc |" in (tmp_path / "res/results.md").read_text()


def test_two_ranks_merged_equal_one_process(monkeypatch, mc_task_file, tok):
    """Quick variant of the torchrun test: each simulated rank scores its interleaved share."""
    model = tiny_model("llama")
    tasks = [
        load_task(mc_task_file),
        {
            "name": "g",
            "type": "generate",
            "data": {"test": [{"query": f"The {w}", "gold": "x"} for w in "abcd"]},
            "fewshot_split": "test",
            "max_gen_toks": 3,
        },
    ]
    single = evaluate(model, tok, tasks, num_fewshot=2, batch_size=3, show_progress=False)
    captured = {}

    class Stop(Exception):
        pass

    def capture(local):
        captured.update(local)
        raise Stop

    monkeypatch.setattr(harness_module, "_distributed_state", lambda: (1, 2))
    monkeypatch.setattr(harness_module, "_gather", capture)
    with pytest.raises(Stop):
        evaluate(model, tok, tasks, num_fewshot=2, batch_size=3, show_progress=False)
    rank1 = dict(captured)
    monkeypatch.setattr(harness_module, "_distributed_state", lambda: (0, 2))
    monkeypatch.setattr(
        harness_module, "_gather", lambda local: (set(local) & set(rank1) == set()) and {**local, **rank1}
    )
    merged = evaluate(model, tok, tasks, num_fewshot=2, batch_size=3, show_progress=False)
    assert rank1 and merged["results"] == single["results"]


def test_shared_rows_stay_inside_a_sliding_window(tok, mc_records):
    from hf_select.eval.harness import build_rows, shared_row_limit

    model = tiny_model("mistral", sliding_window=16)
    assert shared_row_limit(model, 512) == 16
    rows = build_rows(list(range(15)), [[1, 2], [3, 4, 5]], [("t", 0, 0), ("t", 0, 1)], 512, 16)
    assert len(rows) == 2  # 15 + 3 - 1 positions > 16: one row per continuation, the model masks the window
    assert len(build_rows(list(range(10)), [[1, 2], [3]], [("t", 0, 0), ("t", 0, 1)], 512, 16)) == 1
    records = [
        {
            "query": "Question: " + "the quick brown fox " * 5 + "?\nAnswer:",
            "choices": ["dog", "lazy box"],
            "gold": 0,
        }
    ]
    out = evaluate(
        model,
        tok,
        [{"name": "w", "type": "multiple_choice", "data": {"test": records}}],
        log_samples=True,
        show_progress=False,
    )
    hand = [hand_loglik(model, tok, records[0]["query"], " " + c) for c in records[0]["choices"]]
    np.testing.assert_allclose(out["samples"]["w"][0]["loglikelihoods"], hand, atol=2e-4)


def test_shared_prefixes_fed_once_and_packed_rows_do_not_mix(tok):
    """Continuations that share token prefixes (and one-token ones) under the token-tree layout, with rows of
    very different lengths packed into one sequence: every log-likelihood equals the full-logits value."""
    from hf_select.eval.scoring import ScoringRow, _row_layout, score_rows

    model = tiny_model("llama")
    queries = ["Question: the quick brown fox jumps over?\nAnswer:", "Q: box?\nA:", "The", "Key: value"]
    choices = ["dog", "dog house", "dog house big", "cat", "a"]
    rows, hands = [], []
    for q in queries:
        ctx = tok(q).input_ids
        conts = [tok(q + " " + c).input_ids[len(ctx) :] for c in choices]
        rows.append(ScoringRow(ctx, conts, [(q, j) for j in range(len(conts))]))
        hands.append([hand_loglik(model, tok, q, " " + c) for c in choices])
    lay = _row_layout(rows[0])
    proper_prefixes = {tuple(c[:k]) for c in rows[0].continuations for k in range(1, len(c))}
    assert len(lay.ids) == len(rows[0].context) + len(proper_prefixes)  # shared prefixes once, no last token
    got = score_rows(model, rows, batch_size=2, show_progress=False)  # the short rows ride in the long ones
    np.testing.assert_allclose(got, hands, atol=2e-4)


def test_pack_rows_fills_the_room_left_by_the_longest_row():
    from hf_select.eval.scoring import pack_rows

    lengths = [10, 3, 9, 2, 8, 1, 1, 4]
    batches = pack_rows(lengths, batch_size=2)
    seen = sorted(i for bins in batches for b in bins for i in b)
    assert seen == list(range(len(lengths)))
    for bins in batches:
        capacity = max(lengths[b[0]] for b in bins)
        assert len(bins) <= 2 and all(sum(lengths[i] for i in b) <= capacity for b in bins)
    assert sum(len(bins) for bins in batches) < len(lengths)  # short rows shared a sequence
    assert [len(b) for bins in pack_rows(lengths, 2, pack=False) for b in bins] == [1] * len(lengths)
