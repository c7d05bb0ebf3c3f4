"""Evaluation tasks: the declarative format of ``eval/TASK_FORMAT.md`` (YAML/JSON or a dict, plus JSONL data).

A task names its type (``multiple_choice``, ``gold_bpb``, ``generate``, ``perplexity``), where its data lives
and which record fields hold the query, the choices and the gold answer. Prompts are built exactly as
lm-evaluation-harness 0.4.13 builds plain-text prompts, so that the numbers agree:

``context = prefix + description + sum(query_i + target_delimiter + answer_i + fewshot_delimiter) + query``

where the few-shot examples are drawn with one ``random.Random(fewshot_seed)`` shared by the evaluated
documents in their order (``rng.sample(fewshot_docs, k)`` per document, as lm-eval's ``ContextSampler``), and
the continuation scored for a multiple-choice item is ``target_delimiter + choice``. The optional ``prefix``
(conditional inference of MeCo, Gao et al. 2025, arXiv:2501.01956: ``"URL: <host>\\n\\n"``) is joined to the
description as lm-eval joins its system instruction to the description.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

TASK_TYPES = ("multiple_choice", "gold_bpb", "generate", "perplexity")


class TaskError(ValueError):
    """A task file, dict or data record that does not follow the task format."""


@dataclass
class Task:
    """One evaluation task (see ``eval/TASK_FORMAT.md``); build it with :func:`load_task`.

    ``data`` holds the records of every split named in ``data_files`` (read and checked by :func:`load_task`).
    """

    name: str = field(metadata={"help": "Unique task name."})
    type: str = field(metadata={"help": "multiple_choice | gold_bpb | generate | perplexity."})
    data_files: dict[str, list[str]] = field(
        default_factory=dict, metadata={"help": "Split -> JSONL file(s), relative to the task file."}
    )
    split: str = field(default="test", metadata={"help": "The evaluated split."})
    fewshot_split: str | None = field(
        default=None, metadata={"help": "Split the few-shot examples come from."}
    )
    num_fewshot: int = field(default=0, metadata={"help": "Default number of few-shot examples."})
    fewshot_seed: int = field(default=1234, metadata={"help": "Seed of the few-shot sampler."})
    query_field: str = field(default="query", metadata={"help": "Field with the context text."})
    choices_field: str = field(default="choices", metadata={"help": "Field with the list of choices."})
    gold_field: str = field(default="gold", metadata={"help": "Gold index (multiple_choice) or gold string."})
    until: list[str] = field(default_factory=lambda: ["\n\n"], metadata={"help": "generate: stop sequences."})
    max_gen_toks: int = field(default=32, metadata={"help": "generate: maximum number of new tokens."})
    text_field: str = field(default="text", metadata={"help": "perplexity: the document text."})
    domain_field: str | None = field(default="domain", metadata={"help": "perplexity: per-domain results."})
    description: str = field(default="", metadata={"help": "Text put before the few-shot examples."})
    prefix: str | None = field(default=None, metadata={"help": "Conditional-inference prefix (MeCo)."})
    target_delimiter: str = field(default=" ", metadata={"help": "Between the query and the continuation."})
    fewshot_delimiter: str = field(default="\n\n", metadata={"help": "Between few-shot examples."})
    metadata: dict[str, Any] = field(default_factory=dict, metadata={"help": "Free-form provenance."})
    data: dict[str, list[dict[str, Any]]] = field(
        default_factory=dict, repr=False, metadata={"help": "Records per split (inline or read from files)."}
    )

    def docs(self, split: str | None = None) -> list[dict[str, Any]]:
        """Records of ``split`` (default: the evaluated split)."""
        split = split or self.split
        if split not in self.data:
            raise TaskError(f"task {self.name!r} has no split {split!r}; it has {sorted(self.data)}")
        return self.data[split]

    def query(self, doc: dict[str, Any]) -> str:
        return doc[self.query_field]

    def choices(self, doc: dict[str, Any]) -> list[str]:
        return doc[self.choices_field]

    def target(self, doc: dict[str, Any]) -> str:
        """The answer text of a record (the gold choice for multiple choice)."""
        gold = doc[self.gold_field]
        return self.choices(doc)[gold] if self.type == "multiple_choice" else gold

    def continuations(self, doc: dict[str, Any]) -> list[str]:
        """Continuation strings scored after the context: one per choice, or the gold answer."""
        if self.type == "multiple_choice":
            return [self.target_delimiter + choice for choice in self.choices(doc)]
        return [self.target_delimiter + doc[self.gold_field]]

    def header(self, prefix: str | None = None) -> str:
        """``prefix`` (or the task's) joined to the description like lm-eval's system instruction."""
        return join_delimited(
            self.prefix if prefix is None else prefix, self.description, self.fewshot_delimiter
        )

    def fewshot_examples(self, num_fewshot: int, limit: int | None = None) -> list[list[dict[str, Any]]]:
        """Few-shot records for each evaluated record (in order), sampled as lm-eval 0.4.13 samples them."""
        docs = self.docs()[:limit] if limit else self.docs()
        if num_fewshot <= 0:
            return [[] for _ in docs]
        if self.fewshot_split is None:
            raise TaskError(f"task {self.name!r}: num_fewshot={num_fewshot} needs a fewshot_split")
        pool = self.docs(self.fewshot_split)
        same_split = self.fewshot_split == self.split
        needed = num_fewshot + 1 if same_split else num_fewshot
        if len(pool) < needed:
            raise TaskError(
                f"task {self.name!r}: {num_fewshot} few-shot examples asked, split "
                f"{self.fewshot_split!r} has only {len(pool)} records"
            )
        rng = random.Random(self.fewshot_seed)
        examples = []
        for doc in docs:
            if same_split:  # draw one spare and drop the evaluated record, as lm-eval does
                examples.append([x for x in rng.sample(pool, needed) if x != doc][:num_fewshot])
            else:
                examples.append(rng.sample(pool, num_fewshot))
        return examples

    def context(self, doc: dict[str, Any], fewshot: list[dict[str, Any]], prefix: str | None = None) -> str:
        """The prompt of ``doc`` with its few-shot examples (empty for perplexity tasks)."""
        if self.type == "perplexity":
            return ""
        shots = "".join(
            self.query(ex) + self.target_delimiter + self.target(ex) + self.fewshot_delimiter
            for ex in fewshot
        )
        return self.header(prefix) + shots + self.query(doc)


def join_delimited(first: str | None, second: str | None, delimiter: str) -> str:
    """``first + delimiter + second`` unless either is empty or whitespace already separates them."""
    if not first:
        return second or ""
    if not second:
        return first
    if first[-1].isspace() or second[0].isspace():
        return first + second
    return first + delimiter + second


def _read_jsonl(path: Path, task: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise TaskError(f"task {task!r}: data file {path} does not exist")
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskError(f"task {task!r}: {path}:{line_no} is not valid JSON ({exc})") from None
            if not isinstance(record, dict):
                raise TaskError(f"task {task!r}: {path}:{line_no} is not a JSON object")
            records.append(record)
    return records


def _check_record(task: Task, record: dict[str, Any], where: str) -> None:
    def need(name: str, kind, what: str):
        if name not in record:
            raise TaskError(f"task {task.name!r}: {where} has no field {name!r} ({what})")
        if not isinstance(record[name], kind):
            raise TaskError(
                f"task {task.name!r}: {where} field {name!r} must be {what}, got {record[name]!r}"
            )

    if task.type == "perplexity":
        need(task.text_field, str, "the document text")
        return
    need(task.query_field, str, "the query text")
    if task.type == "multiple_choice":
        need(task.choices_field, list, "a list of choice strings")
        choices = record[task.choices_field]
        if not choices:
            raise TaskError(f"task {task.name!r}: {where} has an empty choice list")
        if not all(isinstance(c, str) for c in choices):
            raise TaskError(f"task {task.name!r}: {where} choices must all be strings, got {choices!r}")
        need(task.gold_field, int, "an index into the choices")
        gold = record[task.gold_field]
        if isinstance(gold, bool) or not 0 <= gold < len(choices):
            raise TaskError(
                f"task {task.name!r}: {where} gold index {gold} out of range for {len(choices)} choices"
            )
    else:
        need(task.gold_field, str, "the gold answer string")


def _as_file_list(value, task: str, split: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise TaskError(f"task {task!r}: data_files[{split!r}] must be a path or a list of paths, got {value!r}")


def load_task(path_or_dict: str | Path | dict[str, Any] | Task, base_dir: str | Path | None = None) -> Task:
    """Build a :class:`Task` from a YAML/JSON task file or a dict with the same keys, and read its data.

    Args:
        path_or_dict: a task file (``.yaml``, ``.yml`` or ``.json``), a dict (``name``, ``type``,
            ``data_files`` or inline ``data`` = split -> list of records, and the field names), or a Task.
        base_dir: folder that relative ``data_files`` of a dict are resolved against (default: the current
            folder; for a file, its own folder).

    Raises:
        TaskError: unknown keys or type, a missing data file or split, or a record that does not fit the task
            type (e.g. an empty choice list or a gold index out of range), naming the file and line.
    """
    if isinstance(path_or_dict, Task):
        return path_or_dict
    if isinstance(path_or_dict, dict):
        spec, base = dict(path_or_dict), Path(base_dir or ".")
    else:
        path = Path(path_or_dict)
        if not path.is_file():
            raise TaskError(f"task file {path} does not exist")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            try:
                spec = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                line = f" at line {mark.line + 1}" if mark else ""
                raise TaskError(
                    f"task file {path} is not valid YAML{line}: {getattr(exc, 'problem', None) or exc}"
                ) from None
        elif path.suffix == ".json":
            spec = json.loads(path.read_text(encoding="utf-8"))
        else:
            raise TaskError(f"task file {path} must be .yaml, .yml or .json")
        if not isinstance(spec, dict):
            raise TaskError(f"task file {path} must hold a mapping of task keys")
        base = Path(base_dir) if base_dir else path.parent
    known = {f.name for f in fields(Task)}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise TaskError(f"task {spec.get('name')!r}: unknown key(s) {unknown}; known: {sorted(known)}")
    for key in ("name", "type"):
        if not spec.get(key):
            raise TaskError(f"task spec is missing {key!r}: {spec}")
    if spec["type"] not in TASK_TYPES:
        raise TaskError(f"task {spec['name']!r}: unknown type {spec['type']!r}; use one of {TASK_TYPES}")
    name = spec["name"]
    data_files = spec.pop("data_files", None) or {}
    if isinstance(data_files, (str, list)):  # a plain path (or list of paths): the evaluated split's data
        data_files = {spec.get("split", "test"): data_files}
    if not isinstance(data_files, dict):
        raise TaskError(
            f"task {name!r}: data_files must be a path, a list or split -> path, got {data_files!r}"
        )
    files = {split: _as_file_list(value, name, split) for split, value in data_files.items()}
    data = {split: list(records) for split, records in (spec.pop("data", None) or {}).items()}
    for split, paths in files.items():
        data[split] = [r for p in paths for r in _read_jsonl(_resolve(base, p), name)]
    if isinstance(spec.get("until"), str):
        spec["until"] = [spec["until"]]
    task = Task(
        **spec, data_files={s: [str(_resolve(base, p)) for p in ps] for s, ps in files.items()}, data=data
    )
    if task.split not in task.data:
        raise TaskError(
            f"task {name!r}: evaluated split {task.split!r} has no data; splits: {sorted(task.data)}"
        )
    if not task.docs():
        raise TaskError(f"task {name!r}: evaluated split {task.split!r} is empty")
    for split, records in task.data.items():
        for index, record in enumerate(records):
            _check_record(task, record, f"split {split!r} record {index}")
    return task


def _resolve(base: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


def load_tasks(paths_or_dicts) -> list[Task]:
    """:func:`load_task` on each entry; a folder loads every ``*.yaml`` / ``*.yml`` / ``*.json`` task in it."""
    if isinstance(paths_or_dicts, (str, Path, dict, Task)):
        paths_or_dicts = [paths_or_dicts]
    tasks = []
    for entry in paths_or_dicts:
        if isinstance(entry, (str, Path)) and Path(entry).is_dir():
            found = sorted(p for ext in ("*.yaml", "*.yml", "*.json") for p in Path(entry).glob(ext))
            if not found:
                raise TaskError(f"no task files (*.yaml, *.yml, *.json) in {entry}")
            tasks.extend(load_task(p) for p in found)
        else:
            tasks.append(load_task(entry))
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TaskError(f"duplicate task name(s): {duplicates}")
    return tasks
