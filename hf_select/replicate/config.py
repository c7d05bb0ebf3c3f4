"""Configuration of one replication (``hf-select replicate``): :class:`ReplicationConfig`, the registry of
replications and the merge of a profile over a file's settings.

A replication is a YAML file (``benchmarks/replications/<method>.yaml``) naming a registered ``method``, the paper's
own setting and figures (``paper``), a :class:`~hf_select.compare.StudyConfig` mapping (``study``), the method's
own knobs (``options``, a dataclass registered with the method) and ``profiles`` (``gpu``: larger students). A
method registers with :func:`register_replication`::

    @dataclass
    class MyOptions:
        steps: int = 100

    @register_replication("mine", MyOptions)
    def replicate_mine(ctx: ReplicationContext) -> Section:
        ...
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PLACEHOLDERS = ("{world}", "{cache}", "{model}", "{output}")


@dataclass
class ReplicationType:
    name: str
    options_class: type
    run: Callable[..., Any]


REPLICATIONS: dict[str, ReplicationType] = {}


def register_replication(name: str, options_class: type | None = None):
    """Decorator registering ``run(ctx: ReplicationContext) -> Section`` as replication ``name``; its
    ``options`` are parsed into ``options_class`` (a dataclass)."""
    if options_class is not None and not dataclasses.is_dataclass(options_class):
        raise TypeError(f"the options of replication {name!r} must be a dataclass")

    def wrap(run):
        REPLICATIONS[name] = ReplicationType(name, options_class or _NoOptions, run)
        return run

    return wrap


@dataclass
class _NoOptions:
    pass


def replication_types() -> dict[str, ReplicationType]:
    """Registered replications: every module of this package is imported once (each registers its own)."""
    from . import __path__ as package_path

    for module in pkgutil.iter_modules(package_path):
        if module.name not in ("config", "context", "runner", "results"):
            importlib.import_module(f"{__package__}.{module.name}")
    return REPLICATIONS


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` with ``override``'s values; mappings are merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_placeholders(value: Any, paths: dict[str, str]) -> Any:
    """``value`` with ``{world}``, ``{cache}``, ``{model}`` and ``{output}`` replaced in every string."""
    if isinstance(value, str):
        for key, path in paths.items():
            value = value.replace(key, path)
        return value
    if isinstance(value, dict):
        return {k: resolve_placeholders(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_placeholders(v, paths) for v in value]
    return value


@dataclass
class ReplicationConfig:
    """One paper's direction replicated in its own setting scaled down (``hf-select replicate FILE.yaml``).

    The method's function builds its inputs (each step computed once and stored), runs one or more ``compare``
    studies (each (arm, seed) run resumable) and returns its section of ``results``; the section is stored with
    a fingerprint of the resolved file, so a re-run repeats no finished work and only renders the page again.
    """

    method: str = field(default="", metadata={"help": "The registered replication (attention_influence, slm, meco, data_whisperer, opus)."})
    title: str = field(default="", metadata={"help": "Heading of the method's section."})
    paper: dict = field(default_factory=dict, metadata={"help": "The paper's own setting and figures (shown beside ours)."})
    study: dict = field(default_factory=dict, metadata={"help": "Fields of hf_select.compare.StudyConfig shared by the method's studies."})
    options: dict = field(default_factory=dict, metadata={"help": "Fields of the method's options dataclass."})
    profiles: dict = field(default_factory=dict, metadata={"help": "Named overrides {profile: {study: ..., options: ...}} (e.g. gpu: larger students)."})
    profile: str = field(default="cpu", metadata={"help": "Profile to apply: 'cpu' (the file as written) or a key of profiles."})
    output_dir: str = field(default="replicate_output", metadata={"help": "Runs go to output_dir/<method>/."})
    results: str = field(default="docs/results.md", metadata={"help": "The results page rendered from every finished section in output_dir."})
    cache_dir: str = field(default=".hf_select_cache", metadata={"help": "The demo cache (world and SmolLM2) that `make demo` builds."})
    notes_dir: str = field(
        default="benchmarks/replications",
        metadata={"help": "Folder of <method>.md: the reading of a finished run, written after it and shown under its "
                  "section, marked as such (never part of the run's settings)."},
    )

    def __post_init__(self):
        if not self.method:
            raise ValueError("method: name the registered replication (e.g. slm)")
        if self.profile != "cpu" and self.profile not in self.profiles:
            raise ValueError(f"profile {self.profile!r} is not among this file's profiles {sorted(self.profiles) or '[]'}")
        for name, spec in self.profiles.items():
            unknown = sorted(set(spec or {}) - {"study", "options"})
            if unknown:
                raise ValueError(f"profiles.{name} may hold 'study' and 'options' only, got {unknown}")

    def output_folders(self) -> list[tuple[str, str]]:
        """The folder this run writes (``output_dir/<method>``): replications of other methods may share the
        root at the same time (:mod:`hf_select.output_dir` locks this folder only)."""
        from pathlib import Path

        return [("output_dir", str(Path(self.output_dir) / self.method))]

    def resolved(self) -> tuple[dict, dict]:
        """``(study, options)`` with the profile merged and the placeholders replaced."""
        from pathlib import Path

        spec = self.profiles.get(self.profile) or {}
        study = deep_merge(self.study, spec.get("study") or {})
        options = deep_merge(self.options, spec.get("options") or {})
        cache = Path(self.cache_dir)
        paths = {
            "{world}": str(cache / "world"), "{cache}": str(cache),
            "{model}": str(cache / "models" / "SmolLM2-135M-Instruct"),
            "{output}": str(Path(self.output_dir) / self.method),
        }  # fmt: skip
        return resolve_placeholders(study, paths), resolve_placeholders(options, paths)

    def options_object(self, options: dict):
        """The method's options dataclass built from ``options`` (unknown keys named)."""
        types = replication_types()
        if self.method not in types:
            raise ValueError(f"unknown replication {self.method!r}; registered: {', '.join(sorted(types))}")
        cls = types[self.method].options_class
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ValueError(f"options of {self.method!r} have no field(s) {unknown}; its fields: {sorted(names)}")
        return cls(**options)
