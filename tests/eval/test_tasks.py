import json
import random

import pytest

from hf_select.eval import TaskError, load_task, load_tasks


def _mc_dict(records, **extra):
    return {"name": "t", "type": "multiple_choice", "data": {"test": records}, **extra}


def test_load_yaml_file_reads_relative_data_files(mc_task_file):
    task = load_task(mc_task_file)
    assert task.name == "mc" and task.type == "multiple_choice"
    assert len(task.docs()) == 10 and len(task.docs("train")) == 8
    assert task.description == "Answer the questions.\n\n"
    assert all(p.startswith(str(mc_task_file.parent)) for p in task.data_files["test"])
    assert load_tasks(mc_task_file.parent)[0].name == "mc"  # a folder loads every task file in it


def test_dict_form_with_custom_field_names(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"q": "2+2=", "opts": ["3", "4"], "label": 1}) + "\n")
    task = load_task(
        {
            "name": "x",
            "type": "multiple_choice",
            "data_files": {"test": "d.jsonl"},
            "query_field": "q",
            "choices_field": "opts",
            "gold_field": "label",
        },
        base_dir=tmp_path,
    )
    doc = task.docs()[0]
    assert task.continuations(doc) == [" 3", " 4"] and task.target(doc) == "4"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"query": "q", "choices": [], "gold": 0}, "empty choice list"),
        ({"query": "q", "choices": ["a", "b"], "gold": 2}, "gold index 2 out of range for 2 choices"),
        ({"query": "q", "choices": ["a", "b"], "gold": -1}, "out of range"),
        ({"query": "q", "choices": ["a", "b"], "gold": "a"}, "must be an index into the choices"),
        ({"choices": ["a"], "gold": 0}, "has no field 'query'"),
    ],
)
def test_bad_records_give_clear_errors(record, message):
    with pytest.raises(TaskError, match=message):
        load_task(_mc_dict([record]))


def test_missing_data_file_and_bad_spec(tmp_path):
    with pytest.raises(TaskError, match=r"data file .*nope.jsonl does not exist"):
        load_task({"name": "m", "type": "gold_bpb", "data_files": {"test": "nope.jsonl"}}, base_dir=tmp_path)
    with pytest.raises(TaskError, match="task file .* does not exist"):
        load_task(tmp_path / "missing.yaml")
    with pytest.raises(TaskError, match="unknown type 'mcq'"):
        load_task({"name": "m", "type": "mcq", "data": {"test": []}})
    with pytest.raises(TaskError, match=r"unknown key\(s\) \['choice_field'\]"):
        load_task(_mc_dict([{"query": "q", "choices": ["a"], "gold": 0}], choice_field="x"))
    (tmp_path / "bad.jsonl").write_text('{"query": "q", "gold": "x"}\nnot json\n')
    with pytest.raises(TaskError, match=r"bad.jsonl:2 is not valid JSON"):
        load_task({"name": "b", "type": "gold_bpb", "data_files": {"test": "bad.jsonl"}}, base_dir=tmp_path)


def test_fewshot_context_formatting_by_hand():
    train = [{"query": f"Q{i}:", "choices": ["x", "y"], "gold": i % 2} for i in range(6)]
    test = [
        {"query": "Qa:", "choices": ["u", "v"], "gold": 0},
        {"query": "Qb:", "choices": ["u", "v"], "gold": 1},
    ]
    task = load_task(
        {
            "name": "f",
            "type": "multiple_choice",
            "data": {"test": test, "train": train},
            "fewshot_split": "train",
            "description": "Desc.",
            "prefix": "URL: www.a.com\n\n",
            "fewshot_seed": 7,
        }
    )
    shots = task.fewshot_examples(2)
    rng = random.Random(7)  # lm-eval: one sampler seeded once, one sample() per evaluated document in order
    assert shots == [rng.sample(train, 2), rng.sample(train, 2)]
    a, b = shots[0]
    expected = (
        "URL: www.a.com\n\nDesc."
        f"{a['query']} {a['choices'][a['gold']]}\n\n{b['query']} {b['choices'][b['gold']]}\n\nQa:"
    )
    assert task.context(test[0], shots[0]) == expected
    # a per-call prefix replaces the task's; without whitespace at the seam it is joined by "\n\n"
    assert task.context(test[0], [], prefix="P") == "P\n\nDesc.Qa:"
    assert task.context(test[0], [], prefix="") == "Desc.Qa:"


def test_fewshot_from_the_evaluated_split_never_shows_the_item_itself():
    docs = [{"query": f"Q{i}:", "choices": ["x"], "gold": 0} for i in range(4)]
    task = load_task(
        {"name": "s", "type": "multiple_choice", "data": {"test": docs}, "fewshot_split": "test"}
    )
    for doc, shots in zip(docs, task.fewshot_examples(3)):
        assert len(shots) == 3 and doc not in shots
    with pytest.raises(TaskError, match="has only 4 records"):
        task.fewshot_examples(4)
    with pytest.raises(TaskError, match="needs a fewshot_split"):
        load_task({"name": "n", "type": "multiple_choice", "data": {"test": docs}}).fewshot_examples(1)
