"""The package's shape, read from its code: no import cycle, no study importing another study,
one error base, one implementation of atomic writing."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import medtl
from medtl.errors import MedtlError

PACKAGE = Path(medtl.__file__).parent
STUDIES = "medtl.studies."


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every medtl module `path` imports, wherever the import statement stands (inside
    functions and under TYPE_CHECKING too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, set(modules)) for name, path in modules.items()}


def _cycle_from(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return [*stack[stack.index(w):], w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    assert _cycle_from(_graph()) is None


def test_a_study_imports_only_the_core():
    crossing = []
    for name, targets in _graph().items():
        if name.startswith(STUDIES):
            own = name[len(STUDIES):].split(".")[0]
            crossing += [f"{name} -> {t}" for t in targets
                         if t.startswith(STUDIES) and t[len(STUDIES):].split(".")[0] != own]
        elif not name.startswith("medtl.studies"):
            crossing += [f"{name} -> {t}" for t in targets if t.startswith(STUDIES)]
    assert crossing == []


def test_every_error_class_of_the_kit_derives_from_medtl_error():
    strays = []
    for info in pkgutil.walk_packages(medtl.__path__, "medtl."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if (cls.__module__ == info.name and issubclass(cls, BaseException)
                    and not issubclass(cls, MedtlError)):
                strays.append(f"{info.name}.{cls_name}")
    assert strays == []


def test_only_medtl_io_renames_files_into_place():
    renames = []
    for name, path in _modules().items():
        if name == "medtl.io":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("replace", "rename")
                    and isinstance(node.func.value, ast.Name)):
                continue
            receiver = node.func.value.id
            if receiver in ("os", "shutil") or "tmp" in receiver or "temp" in receiver:
                renames.append(f"{name}:{node.lineno}")
    assert renames == []
