import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_select.data_whisperer.scorer import (
    DataWhisperer,
    answer_metric,
    build_prompt,
    demonstration_weights,
    layer_attention_rows,
    parse_answers,
    tokenize_prompt,
)
from hf_select.testing import tiny_model, tiny_tokenizer

DEMOS = [("What is 2 + 2?", "4"), ("the fox?", "quick brown"), ("Pack my box?", "with five dozen jugs")]
QUERIES = ["Key: value?", "the answer is"]


def _pool(n=12):
    return Dataset.from_dict(
        {"question": [f"What is {i} + {i}?" for i in range(n)], "answer": [str(2 * i) for i in range(n)]}
    )


@pytest.mark.parametrize("with_bos", [True, False])
def test_spans_come_from_one_tokenisation(with_bos):
    tok = tiny_tokenizer(with_bos=with_bos)
    prompt = build_prompt(tok, DEMOS, QUERIES, use_chat_template=False)
    ids, demo_tokens, query_tokens = tokenize_prompt(tok, prompt)
    assert (ids[0, 0].item() == tok.bos_token_id) == with_bos
    full = tok(prompt.text, add_special_tokens=True).input_ids
    assert ids[0].tolist() == full
    for (a, b), idx in zip(prompt.demo_spans + prompt.query_spans, demo_tokens + query_tokens):
        decoded = tok.decode(ids[0, idx[0] : idx[-1] + 1]).strip()
        assert decoded == prompt.text[a:b].strip()
        assert np.all(np.diff(idx) == 1)  # contiguous
    # demonstrations precede queries and do not overlap
    flat = np.concatenate(demo_tokens + query_tokens)
    assert len(set(flat.tolist())) == len(flat) and np.all(np.diff(flat) > 0)


def test_chat_template_spans():
    tok = tiny_tokenizer()
    tok = tok.__class__(
        tokenizer_object=tok.backend_tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}<|assistant|>\n"
    )
    prompt = build_prompt(tok, DEMOS, QUERIES)
    assert prompt.text.startswith("<s><|user|>") and not prompt.add_special_tokens
    ids, demo_tokens, _ = tokenize_prompt(tok, prompt)
    a, b = prompt.demo_spans[1]
    assert prompt.text[a:b] == "Question: the fox?\nAnswer: quick brown"
    assert tok.decode(ids[0, demo_tokens[1][0] : demo_tokens[1][-1] + 1]).strip() == prompt.text[a:b]


@pytest.mark.parametrize("family", ["llama", "qwen3", "gpt2", "gemma2", "gpt_neox"])
def test_layer_rows_match_eager_output_attentions(family):
    tok = tiny_tokenizer()
    ids, _, query_tokens = tokenize_prompt(tok, build_prompt(tok, DEMOS, QUERIES, use_chat_template=False))
    rows = np.concatenate(query_tokens)
    model = tiny_model(family)
    ours = layer_attention_rows(model, ids, 1, rows)
    assert model.config._attn_implementation == tiny_model(family).config._attn_implementation  # restored
    with torch.no_grad():
        eager = tiny_model(family, attn_implementation="eager")(ids, output_attentions=True, use_cache=False)
    torch.testing.assert_close(ours, eager.attentions[1][0][:, rows].float(), atol=1e-6, rtol=1e-5)


def test_known_attention_pattern_uniform_causal():
    # zero queries at layer 0 -> every score equal -> row i attends 1/(i+1) to each key <= i
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.zero_()
    ids = torch.arange(4, 24)[None]
    rows = [5, 10, 19]
    att = layer_attention_rows(model, ids, 0, rows)
    expected = torch.zeros(4, 3, 20)
    for r, i in enumerate(rows):
        expected[:, r, : i + 1] = 1.0 / (i + 1)
    torch.testing.assert_close(att, expected)


def test_weights_and_score_hand_computation():
    # 2 heads, 2 query rows, 7 keys; demo 0 = keys [0, 1], demo 1 = keys [2, 3, 4]; queries at 5, 6
    att = torch.zeros(2, 2, 7)
    att[0, 0, :6] = torch.tensor([0.3, 0.1, 0.2, 0.0, 0.1, 0.3])
    att[1, 0, :6] = torch.tensor([0.0, 0.4, 0.1, 0.1, 0.1, 0.3])
    att[0, 1] = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3])
    att[1, 1] = torch.tensor([0.2, 0.0, 0.0, 0.3, 0.0, 0.2, 0.3])
    w = demonstration_weights(att, np.array([5, 6]), [np.array([0, 1]), np.array([2, 3, 4])])
    a0 = (0.3 + 0.1 + 0.0 + 0.4 + 0.1 + 0.1 + 0.2 + 0.0) / 2  # 0.6
    a1 = (0.2 + 0.0 + 0.1 + 0.1 + 0.1 + 0.1 + 0.1 + 0.1 + 0.1 + 0.0 + 0.3 + 0.0) / 3  # 0.4
    np.testing.assert_allclose(w, [a0 / (a0 + a1), a1 / (a0 + a1)])


def _stats(dw):
    return {k: dw.stats[k] for k in ("groups", "invalid_groups", "retries")}


def test_scores_equal_hand_computation_with_eager_reference():
    tok = tiny_tokenizer()
    model = tiny_model("llama")
    data = _pool(10)  # halves of 5: one group per half with n_demos=5
    # first group: both answers right; second: one right, one wrong
    answers = {}

    def generate(input_ids):
        k = len(answers)
        answers[k] = input_ids
        return " 0\nAnswer 2: 0" if k == 0 else " 999\nAnswer 2: 999"

    dw = DataWhisperer(
        model,
        tok,
        n_demos=5,
        n_queries=2,
        attn_layer=1,
        seed=3,
        use_chat_template=False,
        generate_fn=generate,
    )
    scores = dw.score(data)
    assert _stats(dw) == {"groups": 2, "invalid_groups": 0, "retries": 0}
    eager = tiny_model("llama", attn_implementation="eager")
    expected = np.zeros(10)
    for g in dw.groups:
        prompt = build_prompt(
            tok,
            [(data["question"][i], data["answer"][i]) for i in g.demos],
            [data["question"][j] for j in g.queries],
            use_chat_template=False,
        )
        ids, demo_tokens, query_tokens = tokenize_prompt(tok, prompt)
        rows = np.concatenate(query_tokens)
        with torch.no_grad():
            att = eager(ids, output_attentions=True).attentions[1][0][:, rows].double().numpy()
        a = np.array([att[:, :, idx].sum() / len(idx) for idx in demo_tokens])
        f = [float(p == data["answer"][j]) for p, j in zip(g.answers, g.queries)]
        expected[g.demos] = a / a.sum() * np.mean(f)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    assert sorted(np.concatenate([g.demos for g in dw.groups]).tolist()) == list(range(10))
    for g in dw.groups:  # queries come from the other half
        assert not set(g.demos) & set(g.queries)


def test_invalid_groups_are_retried_not_zeroed():
    outputs = iter(["gibberish", " 1\nno second label", " 2\nAnswer 2: 4", " 6\nAnswer 2: 8"])
    dw = DataWhisperer(
        tiny_model("llama"), tiny_tokenizer(), n_demos=5, n_queries=2, use_chat_template=False,
        generate_fn=lambda ids: next(outputs),
    )  # fmt: skip
    scores = dw.score(_pool(10))
    assert _stats(dw) == {"groups": 2, "invalid_groups": 0, "retries": 2}
    assert np.all(np.isfinite(scores)) and len(dw.groups) == 2


def test_group_that_never_parses_gets_no_score_and_all_nan_is_an_error():
    """A pool where no group parses is an error (never all-NaN scores written with exit code 0)."""
    dw = DataWhisperer(
        tiny_model("llama"),
        tiny_tokenizer(),
        n_demos=5,
        n_queries=2,
        max_retries=1,
        generate_fn=lambda ids: "???",
    )
    with pytest.raises(ValueError, match="no example got a score.*all 2 groups stayed unparseable"):
        dw.score(_pool(10))
    assert _stats(dw) == {"groups": 2, "invalid_groups": 2, "retries": 2}
    assert dw.groups == [] and dw.unparsed[0] == "???"


def test_one_invalid_group_gives_nan_for_its_demos_only():
    outputs = iter(["???", " 2\nAnswer 2: 4"])  # the first group never parses (no retries)
    dw = DataWhisperer(
        tiny_model("llama"),
        tiny_tokenizer(),
        n_demos=5,
        n_queries=2,
        max_retries=0,
        generate_fn=lambda ids: next(outputs),
    )
    scores = dw.score(_pool(10))
    assert _stats(dw) == {"groups": 2, "invalid_groups": 1, "retries": 0}
    scored = dw.groups[0].demos
    assert np.isfinite(scores[scored]).all() and np.isnan(np.delete(scores, scored)).all()


def test_rounds_average_and_seeded():
    kw = dict(
        n_demos=3,
        n_queries=2,
        rounds=2,
        seed=1,
        use_chat_template=False,
        generate_fn=lambda ids: " 0\nAnswer 2: 2",
    )
    dw = DataWhisperer(tiny_model("llama"), tiny_tokenizer(), **kw)
    a = dw.score(_pool(8))
    b = DataWhisperer(tiny_model("llama"), tiny_tokenizer(), **kw).score(_pool(8))
    np.testing.assert_array_equal(a, b)
    sums, counts = np.zeros(8), np.zeros(8)
    for g in dw.groups:
        np.add.at(sums, g.demos, g.scores)
        np.add.at(counts, g.demos, 1)
    assert counts.min() >= 2  # every example is a demonstration at least once per round
    np.testing.assert_allclose(a, sums / counts)


def test_dataset_map_path():
    data = _pool(12)
    dw = DataWhisperer(
        tiny_model("llama"),
        tiny_tokenizer(),
        n_demos=3,
        generate_fn=lambda ids: " 0\nAnswer 2: 2\nAnswer 3: 4",
    )
    direct = dw.score(data)
    mapped = dw.add_scores(data, column="score")
    np.testing.assert_allclose(mapped["score"], direct)


def test_bad_input_errors():
    dw = DataWhisperer(tiny_model("llama"), tiny_tokenizer())
    with pytest.raises(ValueError, match=r"missing \['answer'\]"):
        dw.score(Dataset.from_dict({"question": ["a"] * 20, "text": ["b"] * 20}))
    with pytest.raises(ValueError, match=r"needs at least 10 examples, got 7.*n_demos=5.*n_queries=3"):
        dw.score(_pool(7))
    with pytest.raises(IndexError, match="attn_layer"):
        DataWhisperer(tiny_model("llama"), tiny_tokenizer(), attn_layer=5)


def test_parse_answers_and_metric():
    assert parse_answers(" 4\nAnswer 2: a cat\nAnswer 3: ten\n\nQuestion: x", 3) == ["4", "a cat", "ten"]
    assert parse_answers(" 4\nAnswer 3: x", 3) is None
    assert parse_answers(" \nAnswer 2: y", 2) is None
    assert answer_metric("1,000", "1000") == 1.0
    assert answer_metric("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert answer_metric("x", "y", metric=lambda p, r: 0.25) == 0.25


def test_real_generation_runs_end_to_end():
    dw = DataWhisperer(
        tiny_model("qwen2"), tiny_tokenizer(), n_demos=2, n_queries=1, max_answer_tokens=4, max_retries=0
    )
    scores = dw.score(_pool(4))
    assert scores.shape == (4,) and dw.stats["groups"] == 2


def test_top_fraction_of_scores_skips_nan():
    from hf_select.selection import top_fraction_indices

    assert top_fraction_indices([0.1, np.nan, 0.5, 0.3], 0.5).tolist() == [2, 3]


def test_long_fields_are_clipped_to_fit_the_context():
    long = Dataset.from_dict(
        {"question": ["What is the fox? " * 30] * 8, "answer": ["quick brown " * 40] * 8}
    )
    dw = DataWhisperer(tiny_model("llama"), tiny_tokenizer(), n_demos=3, n_queries=2, max_prompt_tokens=400)
    ids, demo_tokens, _ = dw._fit_prompt(long["question"], long["answer"], [0, 1, 2], [3, 4])
    assert ids.shape[1] <= 400 and len(demo_tokens) == 3
    assert dw.prompt_budget == 400
    assert (
        DataWhisperer(tiny_model("llama"), tiny_tokenizer(), n_queries=2, max_answer_tokens=10).prompt_budget
        == 492
    )


# -- templates, metrics, layer choice, fingerprint, batching, resume -----------------------------------------

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _chat_tokenizer(template):
    tok = tiny_tokenizer()
    tok = tok.__class__(
        tokenizer_object=tok.backend_tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tok.chat_template = template
    return tok


def test_llama3_style_trimming_template_spans():
    """A template that trims the message (Llama-3-Instruct) still gives the spans."""
    tok = _chat_tokenizer(LLAMA3_TEMPLATE)
    prompt = build_prompt(tok, DEMOS, QUERIES)
    assert "<|start_header_id|>user<|end_header_id|>" in prompt.text and prompt.text.endswith("Answer 1:")
    ids, demo_tokens, query_tokens = tokenize_prompt(tok, prompt)
    for (question, answer), (a, b), idx in zip(DEMOS, prompt.demo_spans, demo_tokens):
        assert prompt.text[a:b] == f"Question: {question}\nAnswer: {answer}"
        assert tok.decode(ids[0, idx[0] : idx[-1] + 1]).strip() == prompt.text[a:b]
    for question, (a, b), idx in zip(QUERIES, prompt.query_spans, query_tokens):
        assert prompt.text[a:b] == question
        assert tok.decode(ids[0, idx[0] : idx[-1] + 1]).strip() == question
    with pytest.raises(ValueError, match="no chat template"):
        build_prompt(tiny_tokenizer(), DEMOS, QUERIES, use_chat_template=True)


@pytest.mark.parametrize(
    "generation, n, expected",
    [
        (" a small dog\n\nQuestion 2: What is x?", 1, ["a small dog"]),  # sensible text, then an echo
        (
            " 5\nQuestion 2: what is x?\nAnswer 2: 7",
            2,
            ["5", "7"],
        ),  # an echoed question never joins an answer
        (" 5\nAnswer 2: 6\nAnswer 3: 9\nQuestion 4: y", 3, ["5", "6", "9"]),
        (" Answer 1: 5\nAnswer 2: 6", 2, ["5", "6"]),  # the model repeats the prompted label
        (" 5\n**Answer 2:** six\n\nmore", 2, ["5", "six"]),
        (" step one\nstep two #### 4\n\nQuestion: next", 1, ["step one\nstep two #### 4"]),  # worked answer
        # SmolLM2-135M-Instruct: blank lines before answers, "Question j:" as its answer label
        (
            "\n\nuse str.\n\nQuestion 2:\n\nuse __package__.\n\nQuestion 3:\n\nstty.",
            3,
            ["use str.", "use __package__.", "stty."],
        ),
        (" 5\nQuestion 2: What is x?\n7\n\n", 2, ["5", "7"]),  # its echo of query 2 is skipped
        (" 5\nQuestion 2: What is x?", 2, None),  # an echo alone is no answer
        (
            " The Question of Lay Investiture.\n\nx",
            1,
            ["The Question of Lay Investiture."],
        ),  # a word, no label
        (" Define Aries.\nAnswer: In Python, you", 1, ["Define Aries."]),  # an unnumbered label ends it
        (" 5\nAnswer 3: 9", 3, None),
        ("\n\nAnswer 2: 6", 2, None),  # empty first answer
    ],
)
def test_parse_answers_cuts_every_answer(generation, n, expected):
    """parse_answers cuts each of the n answers out of a generation; a missing or empty one gives None."""
    assert parse_answers(generation, n, ["Q1?", "What is x?", "Q3?", "Q4?"][:n]) == expected


def test_gsm8k_reference_is_graded_by_its_final_number():
    """The last number of the prediction against N of '#### N', never the worked solution."""
    reference = (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72 clips.\n#### 72"
    )
    assert answer_metric("72", reference) == 1.0
    assert answer_metric("She sold 24 in May, so 48 + 24 = 72 clips in total.", reference) == 1.0
    assert answer_metric("24 + 48 = 73", reference) == 0.0
    assert answer_metric("#### 1,000", "so #### 1000") == 1.0
    with pytest.raises(ValueError, match="#### N"):
        answer_metric("5", "5", metric="gsm8k")


def test_answer_budget_follows_the_gold_answers():
    tok = tiny_tokenizer()
    dw = DataWhisperer(tiny_model("llama"), tok, n_demos=3, n_queries=2, max_answer_tokens=40)
    answers = ["4", "the quick brown fox jumps over the lazy dog " * 3]
    gold = [len(tok(a, add_special_tokens=False).input_ids) for a in answers]
    assert dw.answer_budget(answers, [0]) == int(np.ceil(1.5 * gold[0])) + 8
    assert dw.answer_budget(answers, [0, 1]) == int(np.ceil(1.5 * gold[0])) + 8 + min(
        40, int(np.ceil(1.5 * gold[1])) + 8
    )


def test_default_attention_layer_is_40_percent_depth():
    """The paper's layer 13 of 32."""
    assert DataWhisperer(tiny_model("llama", num_hidden_layers=32), tiny_tokenizer()).attn_layer == 13
    assert DataWhisperer(tiny_model("llama", num_hidden_layers=30), tiny_tokenizer()).attn_layer == 12


def test_config_is_the_single_source_and_every_field_changes_the_fingerprint():
    """The config is hashed whole."""
    from dataclasses import fields

    from hf_select.data_whisperer import DataWhispererConfig

    model, tok, data = tiny_model("llama"), tiny_tokenizer(), _pool(12)
    base = DataWhisperer(model, tok).fingerprint(data)
    changed = {
        "n_demos": 4, "n_queries": 2, "attn_layer": 0, "metric": "rouge_l", "rounds": 2, "seed": 1,
        "question_column": "q", "answer_column": "a", "max_answer_tokens": 9, "answer_budget_factor": 2.0,
        "answer_budget_slack": 1, "max_retries": 0, "instruction": "x", "use_chat_template": False,
        "short_answer_words": 1, "rouge_stemmer": False, "max_chars_per_field": 10, "max_prompt_tokens": 99,
        "query_mode": "separate", "batch_prompts": 2, "force_answer_format": False,
    }  # fmt: skip
    assert set(changed) == {f.name for f in fields(DataWhispererConfig)}  # a new field must be listed here
    for name, value in changed.items():
        assert DataWhisperer(model, tok, **{name: value}).fingerprint(data) != base, name
    assert DataWhisperer(model, tok, DataWhispererConfig(n_demos=4)).fingerprint(data) == (
        DataWhisperer(model, tok, n_demos=4).fingerprint(data)
    )
    # weights changed in place, other data, other column names
    other = tiny_model("llama")
    with torch.no_grad():
        other.lm_head.weight[0, 0] += 1e-3
    assert DataWhisperer(other, tok).fingerprint(data) != base
    assert DataWhisperer(model, tok).fingerprint(_pool(13)) != base
    assert DataWhisperer(model, tok).fingerprint(data.add_column("extra", [0] * 12)) != base
    with pytest.raises(TypeError, match="unknown Data Whisperer parameters"):
        DataWhisperer(model, tok, n_demo=3)
    with pytest.raises(ValueError, match="query_mode"):
        DataWhispererConfig(query_mode="both")


def test_empty_gold_answers_are_refused():
    data = Dataset.from_dict({"question": [f"q{i}" for i in range(10)], "answer": ["1"] * 9 + [" "]})
    with pytest.raises(ValueError, match=r"1 examples have an empty 'answer' \(first: row 9\)"):
        DataWhisperer(tiny_model("llama"), tiny_tokenizer(), n_queries=2, generate_fn=lambda ids: " 1").score(
            data
        )


@pytest.mark.parametrize("query_mode, n_queries", [("joint", 1), ("separate", 2)])
def test_batched_generation_equals_one_at_a_time(query_mode, n_queries):
    """Several groups' prompts in one left-padded generate give the parsed answers and weights of the
    prompts generated alone -- and of a plain ``model.generate`` + a separate attention forward per prompt."""
    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    data = Dataset.from_dict(
        {"question": [f"the fox {i}?" if i % 2 else f"What is {i} + {i}?" for i in range(12)],
         "answer": [str(2 * i) if i % 3 else "quick brown fox" for i in range(12)]}
    )  # fmt: skip
    kw = dict(n_demos=3, n_queries=n_queries, query_mode=query_mode, use_chat_template=False, max_retries=1)
    batched = DataWhisperer(model, tok, batch_prompts=8, **kw)
    alone = DataWhisperer(model, tok, batch_prompts=1, **kw)
    a, b = batched.score(data), alone.score(data)
    assert batched.stats["groups"] == 4 and len(batched.groups) >= 2
    assert [g.answers for g in batched.groups] == [g.answers for g in alone.groups]
    assert [g.demos for g in batched.groups] == [g.demos for g in alone.groups]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    questions, answers = data["question"], data["answer"]
    for g in batched.groups:  # independent path: a plain generate to the budget, a separate attention pass
        per_prompt = [g.queries] if query_mode == "joint" else [[j] for j in g.queries]
        parsed, weights = [], []
        for queries in per_prompt:
            budget = batched.answer_budget(answers, queries)
            ids, demo_tokens, query_tokens = batched._fit_prompt(questions, answers, g.demos, queries, budget)
            with torch.no_grad():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget,
                                     do_sample=False, pad_token_id=0)  # fmt: skip
            parsed += parse_answers(
                tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True), len(queries)
            )
            rows = np.concatenate(query_tokens)
            weights.append(demonstration_weights(layer_attention_rows(model, ids, batched.attn_layer, rows),
                                                 rows, demo_tokens))  # fmt: skip
        assert parsed == g.answers
        np.testing.assert_allclose(np.mean(weights, axis=0), g.weights, rtol=1e-4, atol=1e-7)


def test_resume_after_a_kill_equals_a_clean_run(tmp_path):
    """Finished groups are persisted; a killed run re-run with the same settings equals a clean run."""
    data = _pool(16)
    outputs = lambda ids: " 0\nAnswer 2: 4"  # noqa: E731
    kw = dict(n_demos=3, n_queries=2, rounds=2, batch_prompts=2, use_chat_template=False)
    clean = DataWhisperer(tiny_model("llama"), tiny_tokenizer(), generate_fn=outputs, **kw).score(data)
    calls = []

    def dies(ids):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # killed while generating the third batch
        return outputs(ids)

    state = tmp_path / "state"
    with pytest.raises(KeyboardInterrupt):
        DataWhisperer(tiny_model("llama"), tiny_tokenizer(), generate_fn=dies, state_dir=state, **kw).score(
            data
        )
    (log,) = state.glob("run-*/groups.jsonl")
    assert len(log.read_text().splitlines()) == 4
    with open(log, "a") as f:
        f.write('{"round": 1, "gro')  # a line cut by the kill
    count = []
    resumed = DataWhisperer(
        tiny_model("llama"), tiny_tokenizer(), generate_fn=lambda ids: count.append(1) or outputs(ids),
        state_dir=state, **kw,
    )  # fmt: skip
    np.testing.assert_array_equal(resumed.score(data), clean)
    assert resumed.stats["resumed_groups"] == 4 and len(count) == resumed.stats["groups"] - 4
    other = DataWhisperer(tiny_model("llama"), tiny_tokenizer(), generate_fn=outputs, state_dir=state,
                          **{**kw, "seed": 5})  # fmt: skip
    other.score(data)
    assert (
        other.stats["resumed_groups"] == 0 and len(list(state.glob("run-*"))) == 2
    )  # other settings: afresh


def test_answer_format_turns_a_format_breaking_model_into_parseable_answers():
    """A scripted 'model' whose greedy choice breaks the format the ways SmolLM2-135M-Instruct does -- a blank
    line first, then an invented ``Question: ...`` pair, EOS after one answer -- is steered into ``n`` labelled
    answers; every content token it wanted and the format allowed is kept."""
    from hf_select.data_whisperer.labels import AnswerFormat

    tok = tiny_tokenizer()
    eos = tok.eos_token_id
    wanted = tok("\n\nThe cat sat\n\nQuestion: what is it?", add_special_tokens=False).input_ids + [eos] * 40
    prompt = [tok.bos_token_id, 5, 6]
    gen = torch.Generator().manual_seed(0)
    for multiline in (False, True):
        processor = AnswerFormat(tok, len(prompt), [3], [multiline], eos)
        ids, cursor = list(prompt), 0
        for _ in range(60):
            # the script's next tokens are preferred in order (a blocked one gives way to the one after it), then
            # any ordinary token at random
            scores = torch.rand(1, len(tok), generator=gen) * 0.1
            scores[0, tok.all_special_ids] = float("-inf")
            window = wanted[cursor : cursor + 4]
            for k, t in reversed(list(enumerate(window))):
                scores[0, t] = 1.0 / (k + 1)
            token = int(processor(torch.tensor([ids]), scores)[0].argmax())
            if token in window:
                cursor += window.index(token) + 1
            ids.append(token)
            if token == eos:
                break
        text = tok.decode(ids[len(prompt) :], skip_special_tokens=True)
        answers = parse_answers(text, 3)
        assert answers is not None and len(answers) == 3 and all(a.strip() for a in answers), text
        assert answers[0].startswith("The cat sat") and ids[-1] == eos
        assert "Question" in answers[1] or "Question" in answers[0] + answers[1] + answers[2]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_default_generation_of_a_random_model_is_always_parseable(family):
    """With the defaults (answer format enforced) even an untrained model's greedy output parses: no group
    needs a retry; without the constraint most groups are unparseable."""
    kw = dict(n_demos=2, n_queries=2, max_answer_tokens=6, max_retries=0)
    dw = DataWhisperer(tiny_model(family, seed=2), tiny_tokenizer(), **kw)
    scores = dw.score(_pool(8))
    assert dw.stats["retried_groups"] == 0 and dw.stats["invalid_groups"] == 0 and np.isfinite(scores).all()
    free = DataWhisperer(tiny_model(family, seed=2), tiny_tokenizer(), force_answer_format=False, **kw)
    with pytest.raises(ValueError, match="no example got a score"):
        free.score(_pool(8))


def test_an_announcing_first_line_is_not_the_answer():
    """Small instruct models open with "The answer to the question is:" and answer on the next line: the format
    constraint lets the answer continue there and the parser drops the announcing line."""
    text = "The answer to the question about tabs is:\nUse expandtabs().\nAnswer 2: 4\nAnswer 3:\nIt is:\n7"
    assert parse_answers(text, 3) == ["Use expandtabs().", "4", "7"]
    assert parse_answers("Note: x\nAnswer 2: y", 2) == ["Note: x", "y"]
