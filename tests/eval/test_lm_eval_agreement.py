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
