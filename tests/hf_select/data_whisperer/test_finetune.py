import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_select.data_whisperer.finetune import (
    FinetuneArguments,
    compare_subsets,
    encode_example,
    evaluate_qa,
    finetune,
    format_comparison,
    gold_loss,
)
from hf_select.testing import tiny_model, tiny_tokenizer
from hf_select.token_loss import IGNORE_INDEX


def _data(n=8):
    return Dataset.from_dict(
        {"question": [f"What is {i} + {i}?" for i in range(n)], "answer": [str(2 * i) for i in range(n)]}
    )


def _args(tmp_path, use_lora, steps=3):
    return FinetuneArguments(
        output_dir=str(tmp_path),
        use_lora=use_lora,
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        lora_r=4,
    )


def test_encode_example_masks_prompt():
    tok = tiny_tokenizer()
    row = encode_example(tok, "What is 2 + 2?", "4")
    prompt = tok("Question: What is 2 + 2?\nAnswer:").input_ids
    assert row["input_ids"][: len(prompt)] == prompt
    assert row["labels"][: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert row["labels"][len(prompt) :] == row["input_ids"][len(prompt) :]
    assert row["input_ids"][-1] == tok.eos_token_id


@pytest.mark.parametrize("use_lora", [False, True])
def test_full_and_lora_finetuning_run_and_change_weights(tmp_path, use_lora):
    tok = tiny_tokenizer()
    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss_before = gold_loss(model, tok, _data())
    trained, seconds = finetune(model, tok, _data(), _args(tmp_path, use_lora, steps=6))
    assert seconds > 0
    after = trained.state_dict() if not use_lora else trained.get_base_model().state_dict()
    if use_lora:
        names = [n for n, p in trained.named_parameters() if p.requires_grad]
        assert names and all("lora_" in n for n in names)
        assert all(
            torch.equal(before[k], after[k.replace(".base_layer", "")]) for k in before if "proj" not in k
        )
    else:
        assert any(not torch.equal(before[k], after[k]) for k in before)
    assert gold_loss(trained, tok, _data()) < loss_before  # learnt the training answers


def test_gold_loss_matches_manual_cross_entropy():
    tok = tiny_tokenizer()
    model = tiny_model("llama")
    row = encode_example(tok, "What is 1 + 1?", "2")
    ids = torch.tensor([row["input_ids"]])
    labels = torch.tensor([row["labels"]])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1]
    manual = torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=IGNORE_INDEX)
    data = Dataset.from_dict({"question": ["What is 1 + 1?"], "answer": ["2"]})
    assert gold_loss(model, tok, data) == pytest.approx(manual.item(), rel=1e-5)


def test_compare_subsets_and_str(tmp_path):
    tok = tiny_tokenizer()
    res = compare_subsets(
        lambda: tiny_model("llama"),
        tok,
        _data(8),
        _data(4),
        [0, 1],
        _args(tmp_path, True, steps=1),
        selection_seconds=0.5,
        max_generate=2,
    )
    assert res["selected"]["size"] == res["random"]["size"] == 2 and res["full"]["size"] == 8
    assert res["STR"] == pytest.approx(0.5 / res["full"]["train_seconds"])
    assert np.isfinite(res["base"]["gold_loss"])
    assert "STR =" in format_comparison(res)


def test_bad_input(tmp_path):
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match=r"missing column\(s\) \['answer'\]"):
        finetune(tiny_model("llama"), tok, Dataset.from_dict({"question": ["a"]}), _args(tmp_path, False))
    with pytest.raises(ValueError, match="held-out data is missing"):
        evaluate_qa(tiny_model("llama"), tok, Dataset.from_dict({"q": ["a"]}))


def test_two_identical_lora_runs_give_identical_weights(tmp_path):
    """The seed is set before the LoRA adapters exist: whatever the random state before the call, two runs with
    the same arguments train the same adapters (their initialisation is random)."""
    tok = tiny_tokenizer()
    runs = []
    for disturbance in (1, 2):
        model = tiny_model("llama")
        torch.manual_seed(disturbance)  # the random state a caller happens to leave behind
        trained, _ = finetune(model, tok, _data(4), _args(tmp_path / str(disturbance), True, steps=1))
        runs.append({k: v.detach().clone() for k, v in trained.state_dict().items() if "lora_" in k})
    assert runs[0] and runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_generate_answers_stops_at_the_line_yet_equals_the_full_budget():
    """Rows stop once their first line is closed; the answers equal full-budget generation cut the same way."""
    from hf_select.data_whisperer.finetune import generate_answers, prompt_text
    from hf_select.generation import generate_greedy

    tok, model = tiny_tokenizer(), tiny_model("llama").eval()
    newline, letter = tok("\n", add_special_tokens=False).input_ids[0], tok("l", add_special_tokens=False).input_ids[0]
    with torch.no_grad():  # a newline wherever "l" is strongly preferred: some rows close their line early
        model.lm_head.weight[newline] = 1.5 * model.lm_head.weight[letter]
    questions = [f"What is {i} plus {i}?" for i in range(12)]
    full = generate_greedy(model, tok, [prompt_text(q) for q in questions], 24, batch_size=4)
    assert any("\n" in text.strip() for text in full)  # the early stop is exercised
    expected = [text.strip().split("\n")[0].strip() for text in full]
    assert generate_answers(model, tok, questions, max_new_tokens=24, batch_size=4) == expected
