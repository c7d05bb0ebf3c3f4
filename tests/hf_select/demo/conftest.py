"""One fake-world builder for the demo tests: the documented world layout (``hf_select/demo/context.py``) in
miniature, with only the parts a test asks for.

Use the ``fake_world`` fixture: ``ctx = fake_world(pretrain=rows, heldout=4, lowq=rows, ...)`` writes under
``tmp_path/cache`` and returns a quick-mode :class:`DemoContext` whose output goes to ``tmp_path/out``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from datasets import Dataset, DatasetDict

from hf_select.demo.context import DemoContext
from hf_select.testing import tiny_model, tiny_tokenizer

Rows = Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]


def _dataset(rows: Rows) -> Dataset:
    return Dataset.from_dict(dict(rows)) if isinstance(rows, Mapping) else Dataset.from_list(list(rows))


def _splits(train: Rows, heldout: int | Rows) -> DatasetDict:
    data = _dataset(train)
    held = data.select(range(heldout)) if isinstance(heldout, int) else _dataset(heldout)
    return DatasetDict({"train": data, "heldout": held})


def build_world(
    ctx: DemoContext,
    *,
    model: bool = True,
    model_seed: int = 0,
    model_overrides: Mapping[str, Any] | None = None,
    pretrain: Rows | None = None,
    heldout: int | Rows = 4,
    lowq: Rows | None = None,
    finetune: Rows | None = None,
    finetune_heldout: int | Rows = 6,
    eval_tasks: Mapping[str, str | Sequence[Mapping[str, Any]]] | None = None,
    students: Mapping[str, Mapping[str, Any]] | None = None,
) -> DemoContext:
    """Write the parts of a world that a test needs and return ``ctx``.

    Args:
        ctx: where the world goes (``ctx.world_dir``, ``ctx.model_dir``, ``ctx.students_dir``).
        model: save a tiny Llama with the tiny tokenizer as the embedded pretrained model.
        model_seed, model_overrides: its seed and config overrides (e.g. ``num_hidden_layers``).
        pretrain: rows of ``pretrain/train`` (a list of dicts or a dict of columns).
        heldout: ``pretrain/heldout``: the first N train rows, or rows of its own.
        lowq: rows of the low-quality pool ``lowq/``.
        finetune, finetune_heldout: ``finetune/`` train rows and heldout (first N rows, or rows).
        eval_tasks: file name -> text (YAML) or records (written as JSONL) under ``eval_tasks/``.
        students: name -> ``hf_select_student.json`` content; student ``i`` is a tiny Llama of seed ``i + 1``.

    The world tokenizer (``tokenizer/``) is always written.
    """
    tok = tiny_tokenizer()
    tok.save_pretrained(ctx.tokenizer_dir)
    if model:
        tiny_model("llama", seed=model_seed, **dict(model_overrides or {})).save_pretrained(ctx.model_dir)
        tok.save_pretrained(ctx.model_dir)
    if pretrain is not None:
        _splits(pretrain, heldout).save_to_disk(str(ctx.world_dir / "pretrain"))
    if lowq is not None:
        _dataset(lowq).save_to_disk(str(ctx.world_dir / "lowq"))
    if finetune is not None:
        _splits(finetune, finetune_heldout).save_to_disk(str(ctx.world_dir / "finetune"))
    if eval_tasks:
        folder = ctx.world_dir / "eval_tasks"
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in eval_tasks.items():
            text = content if isinstance(content, str) else "".join(json.dumps(r) + "\n" for r in content)
            (folder / name).write_text(text)
    for i, (name, meta) in enumerate((students or {}).items()):
        folder = ctx.students_dir / name
        tiny_model("llama", seed=i + 1).save_pretrained(folder)
        (folder / "hf_select_student.json").write_text(json.dumps({"name": name, **meta}))
    return ctx


@pytest.fixture
def fake_world(tmp_path):
    """``fake_world(**parts)``: a quick-mode :class:`DemoContext` under ``tmp_path`` with those world parts
    (see :func:`build_world`)."""

    def make(**parts) -> DemoContext:
        return build_world(DemoContext(tmp_path / "out", tmp_path / "cache", quick=True), **parts)

    return make
