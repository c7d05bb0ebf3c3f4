import json
import random

import pytest

from hf_select.testing import TINY_WORDS as WORDS


def make_mc_records(n, seed=0, min_choices=2, max_choices=4):
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        query = "Question: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))) + "?\nAnswer:"
        choices = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
            for _ in range(rng.randint(min_choices, max_choices))
        ]
        records.append({"query": query, "choices": choices, "gold": rng.randrange(len(choices))})
    return records


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def mc_task_file(tmp_path):
    """A multiple-choice task file (YAML + test/train JSONL)."""
    write_jsonl(tmp_path / "mc.test.jsonl", make_mc_records(10, seed=1))
    write_jsonl(tmp_path / "mc.train.jsonl", make_mc_records(8, seed=2))
    (tmp_path / "mc.yaml").write_text(
        "name: mc\ntype: multiple_choice\ndata_files:\n  test: mc.test.jsonl\n  train: mc.train.jsonl\n"
        "split: test\nfewshot_split: train\nnum_fewshot: 0\nfewshot_seed: 1234\n"
        'description: "Answer the questions.\\n\\n"\n'
    )
    return tmp_path / "mc.yaml"


@pytest.fixture
def mc_records():
    """make_mc_records(n, seed, min_choices, max_choices): random multiple-choice records."""
    return make_mc_records
