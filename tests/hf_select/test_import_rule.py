"""The dependency rule: core imports no method, no demo and no dataset_scripts; a method imports the core and
its own folder only; trainers, eval and dataset builders never import the demo or the commands; compare imports
anything but the demo and the commands. Commands and the demo may import anything but another command; no
private name is imported across packages; datatrove imports no command and no CLI argument class."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("attention_influence", "slm", "meco", "data_whisperer", "opus")
PACKAGE_DIRS = {"trainer_ext": "hf_select.trainer_ext", "eval": "hf_select.eval", "dataset_scripts": "hf_select.dataset_scripts"}


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in PACKAGE_DIRS:
        parts = PACKAGE_DIRS[parts[0]].split(".") + parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append(name)
            found += [f"{name}.{alias.name}" for alias in node.names]  # `from . import x`
    return [name for name in found if name.startswith("hf_select")]


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    head = parts[1]
    if head in METHODS:
        return f"method:{head}"
    if head in ("demo", "commands", "cli"):
        return "app"
    if head in ("trainer_ext", "eval", "dataset_scripts", "datatrove", "compare", "replicate"):
        return head
    return "core"


def _exists(module: str) -> bool:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in PACKAGE_DIRS:
        base = ROOT / parts[1]
        rest = parts[2:]
    else:
        base = ROOT / "hf_select"
        rest = parts[1:]
    path = base.joinpath(*rest) if rest else base
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _allowed(source: str, target: str) -> bool:
    if source == "app":
        return True
    # compare runs every method's trainer, replicate every method's study: anything but the app (the demo and
    # the commands)
    if source in ("compare", "replicate"):
        return target != "app"
    if target == "core":
        return True
    if source == "core":
        return False
    if source.startswith("method:"):
        return target == source
    # trainer_ext / eval / dataset_scripts / datatrove: core and methods, never the app, never each other
    # (dataset builders may use eval's task formats; the datatrove steps wrap the method scorers)
    if target.startswith("method:"):
        return True
    return target == source or (source == "dataset_scripts" and target == "eval")


SOURCES = sorted(
    p
    for folder in ("hf_select", *PACKAGE_DIRS)
    for p in (ROOT / folder).rglob("*.py")
    if p.name != "__init__.py" or p.parent.name != "hf_select"  # the top-level lazy map names modules as strings
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_dependency_rule(path):
    source = _layer(_module_of(path))
    bad = []
    for target_module in _imports(path):
        if not _exists(target_module) and not _exists(target_module.rsplit(".", 1)[0]):
            continue
        if not _exists(target_module):
            target_module = target_module.rsplit(".", 1)[0]
        target = _layer(target_module)
        if not _allowed(source, target):
            bad.append(f"{target_module} ({target})")
    assert not bad, f"{path.relative_to(ROOT)} ({source}) imports {sorted(set(bad))}"


def test_top_level_api_exports_no_demo_or_builder():
    import hf_select

    modules = set(hf_select._EXPORTS.values())
    assert not [m for m in modules if _layer(m) in ("app", "dataset_scripts")]


def _imported_names(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from module import name`` of ``path`` (relative imports resolved)."""
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found += [(name, alias.name) for alias in node.names]
    return found


COMMANDS = sorted(p for p in (ROOT / "hf_select" / "commands").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p.stem)
def test_no_command_imports_another_command(path):
    own = _module_of(path)
    others = [
        m for m in _imports(path)
        if m.startswith("hf_select.commands.") and not m.startswith(own) and m.count(".") >= 2
    ]  # fmt: skip
    assert not others, f"{path.name} imports the command(s) {sorted(set(others))}"


def _folder_of(module: str) -> Path:
    """The folder a module lives in (a package's own folder for ``__init__``)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in PACKAGE_DIRS:
        path = ROOT.joinpath(parts[1], *parts[2:])
    else:
        path = ROOT.joinpath("hf_select", *parts[1:])
    return path if (path / "__init__.py").exists() else path.parent


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_is_imported_across_packages(path):
    bad = [
        f"{module}.{name}"
        for module, name in _imported_names(path)
        if module.startswith("hf_select")
        and name.startswith("_")
        and not name.startswith("__")
        and _folder_of(module) != path.parent
    ]
    assert not bad, f"{path.relative_to(ROOT)} imports private names of another package: {bad}"


DATATROVE = sorted((ROOT / "hf_select" / "datatrove").glob("*.py"))


@pytest.mark.parametrize("path", DATATROVE, ids=lambda p: p.name)
def test_datatrove_imports_no_command_and_no_cli_argument_class(path):
    bad = [m for m in _imports(path) if m.startswith(("hf_select.commands", "hf_select.cli"))]
    bad += [f"{m}.{n}" for m, n in _imported_names(path) if n.endswith("Arguments")]
    assert not bad, f"{path.name} imports {bad}"
    # nor takes the command's parsed argument objects: steps and pipelines take the method's config dataclass
    takes = [
        f"{node.name}({arg.arg})"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for arg in node.args.args + node.args.kwonlyargs
        if arg.arg in ("args", "model_args", "data_args", "script_args", "training_args")
    ]
    assert not takes, f"{path.name} takes CLI argument objects: {takes}"
