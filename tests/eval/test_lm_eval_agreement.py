import pytest

from hf_select.eval import lm_eval_available, load_task
from hf_select.eval.lm_eval_adapter import lm_eval_task_config
from hf_select.testing import tiny_model, tiny_tokenizer

needs_lm_eval = pytest.mark.skipif(
    not lm_eval_available(), reason="lm-eval (optional extra) is not installed"
)


def test_lm_eval_config_mirrors_the_task(mc_task_file):
    config = lm_eval_task_config(load_task(mc_task_file), num_fewshot=2)
    assert config["dataset_path"] == "json" and config["output_type"] == "multiple_choice"
    assert config["dataset_kwargs"]["data_files"]["test"][0].endswith("mc.test.jsonl")
    assert (config["doc_to_text"], config["doc_to_choice"], config["doc_to_target"]) == (
        "query",
        "choices",
        "gold",
    )
    assert config["num_fewshot"] == 2 and config["fewshot_split"] == "train"
    with pytest.raises(NotImplementedError, match="gold_bpb"):
        lm_eval_task_config(
            load_task({"name": "g", "type": "gold_bpb", "data": {"test": [{"query": "a", "gold": "b"}]}})
        )


@needs_lm_eval
@pytest.mark.parametrize(
    ("num_fewshot", "prefix"), [(2, None), pytest.param(0, "URL: www.quiz.com\n\n", marks=pytest.mark.slow)]
)
def test_acc_and_acc_norm_identical_to_lm_eval(mc_task_file, num_fewshot, prefix):
    from hf_select.eval import agreement_check

    report = agreement_check(
        tiny_model("llama"),
        tiny_tokenizer(),
        [mc_task_file],
        num_fewshot=num_fewshot,
        batch_size=8,
        prefix=prefix,
    )
    result = report["mc"]
    assert result["num_items"] == 10
    assert result["hf_select"] == result["lm_eval"] and result["agree"]
    assert result["max_loglik_diff"] < 1e-4


@needs_lm_eval
def test_generations_identical_to_lm_eval_generate_until(tmp_path):
    """GSM8K-style generate task: hf-select's greedy generations equal lm-eval generate_until's, string by
    string, on the same prompts (2-shot, until a stop string or max_gen_toks)."""
    import json

    from hf_select.eval import evaluate
    from hf_select.eval.lm_eval_adapter import run_lm_eval
    from hf_select.text_metrics import exact_match

    def records(n, offset):
        return [
            {"query": f"Question: {i} + {i + 1} = ?\nAnswer:", "gold": str(2 * i + 1)}
            for i in range(offset, offset + n)
        ]

    for split, recs in (("test", records(6, 0)), ("train", records(4, 50))):
        (tmp_path / f"gen.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    spec = {
        "name": "gen",
        "type": "generate",
        "data_files": {"test": "gen.test.jsonl", "train": "gen.train.jsonl"},
        "fewshot_split": "train",
        "num_fewshot": 2,
        "until": ["\n", "Question"],
        "max_gen_toks": 8,
    }
    (tmp_path / "gen.json").write_text(json.dumps(spec))
    task = load_task(tmp_path / "gen.json")
    assert lm_eval_task_config(task)["output_type"] == "generate_until"
    model, tok = tiny_model("llama", seed=1), tiny_tokenizer()
    ours = evaluate(model, tok, [task], batch_size=4, log_samples=True, show_progress=False)
    theirs = run_lm_eval(model, tok, [task], batch_size=4, log_samples=True)
    mine = {sample["doc_id"]: sample["prediction"] for sample in ours["samples"]["gen"]}
    other = {}
    for sample in theirs["samples"]["gen"]:
        text = sample["filtered_resps"][0]
        other[sample["doc_id"]] = text[0] if isinstance(text, list) else text
    assert len(other) == 6 and mine == other
    assert any(mine.values())  # something was generated
    golds = [r["gold"] for r in records(6, 0)]
    graded = [exact_match(other[i], gold) for i, gold in enumerate(golds)]
    assert ours["results"]["gen"]["exact_match_numeric"] == pytest.approx(sum(graded) / len(graded))
    assert ours["results"]["gen"]["exact_match"] == pytest.approx(theirs["results"]["gen"]["exact_match,none"])


@needs_lm_eval
@pytest.mark.parametrize("with_bos", [True, False], ids=["bos-adding", "no-bos"])
def test_rolling_loglikelihood_identical_to_lm_eval(tmp_path, with_bos):
    """Perplexity tasks equal lm-eval's ``loglikelihood_rolling`` document by document (1e-4 nats), with a
    Llama-style tokenizer that adds BOS (its BOS is then a predicted token, as in lm-eval) and with one that
    adds nothing; ``max_length=24`` makes the longer documents span several rolling windows."""
    import json

    from hf_select.eval import agreement_check

    texts = ["The cat sat on the mat. " * k + "The end." for k in (1, 2, 5, 9)] + ["hello world", "x"]
    (tmp_path / "ppl.test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    spec = {"name": "ppl", "type": "perplexity", "data_files": {"test": "ppl.test.jsonl"}}
    (tmp_path / "ppl.json").write_text(json.dumps(spec))
    tok = tiny_tokenizer(with_bos=with_bos)
    assert (tok("a").input_ids[0] == tok.bos_token_id) is with_bos
    report = agreement_check(tiny_model("llama"), tok, [tmp_path / "ppl.json"], batch_size=4, max_length=24)
    result = report["ppl"]
    assert result["num_items"] == len(texts)
    assert result["max_loglik_diff"] < 1e-4 and result["agree"]
    assert result["hf_select"]["bits_per_byte"] == pytest.approx(result["lm_eval"]["bits_per_byte"], rel=1e-6)


@needs_lm_eval
def test_generate_exact_match_is_lm_evals():
    """The generate task's ``exact_match`` is lm-eval's (string equality, gold cast to str); the number-
    normalised grading is the separate ``exact_match_numeric``."""
    from lm_eval.api.metrics import exact_match_hf_evaluate

    from hf_select.eval.results import TASK_METRICS, string_exact_match

    pairs = [(" 7", "7"), ("7", "7"), ("7.0", "7"), ("1,200", "1200"), ("The answer is 3", "3"), ("Cat", "cat"),
             ("cat.", "cat"), ("", "z"), ("x ", "x")]  # fmt: skip
    for pred, gold in pairs:
        theirs = exact_match_hf_evaluate(predictions=[pred], references=[str(gold)])["exact_match"]
        assert string_exact_match(pred, gold) == theirs, (pred, gold)
    records = [{"query": "q", "gold": g} for _, g in pairs]
    task = load_task({"name": "g", "type": "generate", "data": {"test": records}})
    docs = task.docs()
    generations = {("g", i): pred for i, (pred, _) in enumerate(pairs)}
    out, samples = TASK_METRICS["generate"](task, docs, {}, generations, {})
    expected = [exact_match_hf_evaluate(predictions=[p], references=[str(g)])["exact_match"] for p, g in pairs]
    assert out["exact_match"] == pytest.approx(sum(expected) / len(pairs))
    assert out["exact_match_numeric"] > out["exact_match"]  # " 7", "7.0", "1,200", ... count only here
    assert [s["exact_match"] for s in samples] == expected
