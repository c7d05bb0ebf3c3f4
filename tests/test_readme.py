"""Every ```python block of README.md and docs/*.md runs here, on tiny models, so the docs cannot drift.

Mechanism (one place): :func:`python_blocks` extracts each fenced block whose info string is ``python``;
each block runs with ``exec`` in a fresh copy of the *fixture namespace* below, with the working directory
set to a ``tmp_path`` that holds the files the blocks name (``eval_tasks/``). A block therefore uses only
these names besides its own imports, and the README says so where the blocks start:

- ``model``: a tiny random Llama (:func:`hf_select.testing.tiny_model`), ``tok`` / ``tokenizer``: its BPE
  tokenizer (:func:`hf_select.testing.tiny_tokenizer`);
- ``input_ids``, ``attention_mask``: a right-padded batch of two documents; ``tokenised_docs``: token ids of a
  few documents;
- ``samples``: AttentionInfluence proxy samples sized for the tiny tokenizer; ``ds``: documents with ``text`` and
  ``domain``; ``dataset``: a question/answer pool.

A block that is only an illustration and cannot run (it needs the Hub or a GPU) is fenced as ```text, not
```python. ``...`` in a block is Python's Ellipsis, so keyword arguments shown as ``model_id=...`` run too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[str, str]]:
    """``(id, source)`` of each ```python block of ``path``; the id names the file and the block's first line."""
    text = path.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return blocks


ALL_BLOCKS = [block for path in DOCUMENTS for block in python_blocks(path)]


def test_the_readme_has_python_blocks_and_the_extractor_finds_them():
    # A fence spelled differently (```py, ```Python) would be silently skipped: check against a plain count.
    readme = (ROOT / "README.md").read_text()
    assert len(python_blocks(ROOT / "README.md")) == readme.count("```python") >= 4


def _write_tasks(folder: Path) -> None:
    folder.mkdir()
    items = [{"query": f"Question {i}?\nAnswer:", "choices": ["yes", "no"], "gold": i % 2} for i in range(4)]
    (folder / "yn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    (folder / "yn.yaml").write_text("name: yn\ntype: multiple_choice\ndata_files:\n  test: yn.jsonl\n")


@pytest.fixture(scope="module")
def namespace():
    from hf_select.attention_influence.proxy_task import build_proxy_samples
    from hf_select.testing import TINY_WORDS, tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model("llama")
    docs = ["The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return a + b"]
    enc = tok(docs, padding=True, return_tensors="pt")
    words = list(TINY_WORDS)
    values = [" ".join(words[i : i + 3]) for i in range(0, len(words) - 3)]
    samples = build_proxy_samples(values, tok, num_samples=4, context_tokens=320, key_length=4)
    texts = [" ".join(words[i : i + 8]) for i in range(12)]
    ds = Dataset.from_dict({"text": texts, "domain": ["prose", "code"] * 6})
    qa = Dataset.from_dict(
        {"question": [f"What is {i} + {i}?" for i in range(10)], "answer": [str(2 * i) for i in range(10)]}
    )
    return {
        "model": model,
        "tok": tok,
        "tokenizer": tok,
        "input_ids": enc.input_ids,
        "attention_mask": enc.attention_mask,
        "tokenised_docs": [tok(d).input_ids for d in docs * 3],
        "samples": samples,
        "ds": ds,
        "dataset": qa,
    }


@pytest.mark.parametrize("block_id,source", ALL_BLOCKS, ids=[b[0] for b in ALL_BLOCKS])
def test_python_block_runs(block_id, source, namespace, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_tasks(tmp_path / "eval_tasks")
    torch.manual_seed(0)
    scope = dict(namespace)
    exec(compile(source, block_id, "exec"), scope)  # the docs are the code under test
    # The names a block promises to define exist and are not None (a block cannot pass by doing nothing).
    defined = set()
    for name in re.findall(r"^(\w+(?:\s*,\s*\w+)*)\s*=", source, re.M):
        defined.update(n.strip() for n in name.split(","))
    assert defined, f"{block_id} assigns nothing"
    for name in defined:
        assert scope.get(name) is not None, f"{block_id}: {name} is None"


def _repo_paths() -> list[str]:
    skip = {".git", ".venv", ".hf_select_cache", "__pycache__", "build"}
    paths = []
    for folder, dirs, files in __import__("os").walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
        rel = Path(folder).relative_to(ROOT).as_posix()
        paths += [f"{rel}/{name}".lstrip("./") for name in [*dirs, *files]]
    return paths


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


@pytest.mark.parametrize("title", ["Layout", "Where each method lives"])
def test_every_path_the_readme_map_names_exists(title):
    """Each file or folder named in code quotes in the map sections is in the repository (by path suffix, since
    the table's columns name files relative to their folder)."""
    section = _section((ROOT / "README.md").read_text(), title)
    names = [n for n in re.findall(r"`([\w./-]+)`", section) if re.search(r"\.(py|md)$|/$", n)]
    assert len(names) >= (40 if title.startswith("Where") else 5)
    paths = _repo_paths()
    missing = [
        n for n in names if not any(p == n.rstrip("/") or p.endswith("/" + n.rstrip("/")) for p in paths)
    ]
    assert not missing, f"the README names paths that do not exist: {missing}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=[str(p.relative_to(ROOT)) for p in DOCUMENTS])
def test_links_stay_inside_the_repository_and_resolve(path):
    text = path.read_text()
    assert "shared/specs" not in text and "](../../" not in text
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if not target.startswith(("http://", "https://")):
            assert (path.parent / target).exists(), f"{path.name} links to a missing {target}"
