"""pyproject.toml declares what the kit needs: `pip install .` installs every package the kit
imports, pinned; the test and lint tools are an extra; requirements.txt (the venv's lock) agrees
with it and pins everything the declared packages pull in."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
# Built from source by scripts/build_caffe.sh (BVLC Caffe with the kit's patches); no package
# registry serves it. Its own imports (numpy, scipy, scikit-image, six, protobuf) are declared.
BUILT_BY_THE_KIT = {"caffe"}
TOOLS = {"pytest", "ruff"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _pins(lines: list[str]) -> dict[str, str]:
    """name -> version of `name==version` requirements (anything else: version None)."""
    out = {}
    for line in lines:
        req = Requirement(line)
        spec = list(req.specifier)
        pinned = len(spec) == 1 and spec[0].operator == "=="
        out[_norm(req.name)] = spec[0].version if pinned else None
    return out


def _requirements_txt() -> dict[str, str]:
    lines = [line.split("#", 1)[0].strip()
             for line in (REPO / "requirements.txt").read_text().splitlines()]
    return _pins([line for line in lines if line])


def _imported_packages() -> dict[str, str]:
    """Top-level third-party modules imported anywhere in python/medtl -> one file that does."""
    found = {}
    for path in sorted((REPO / "python" / "medtl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "medtl":
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_every_third_party_package_the_kit_imports_is_a_pinned_runtime_dependency():
    runtime = _pins(_project()["dependencies"])
    distributions = metadata.packages_distributions()
    missing = []
    for module, where in sorted(_imported_packages().items()):
        if module in BUILT_BY_THE_KIT:
            continue
        names = {_norm(d) for d in distributions.get(module, [module])}
        if not any(runtime.get(name) for name in names):
            missing.append(f"{module} ({where}; distribution {', '.join(sorted(names))})")
    assert not missing, f"imported but not pinned (==) in pyproject dependencies: {missing}"


def test_every_runtime_dependency_is_pinned_and_the_executor_packages_are_there():
    runtime = _pins(_project()["dependencies"])
    assert runtime, "pyproject.toml declares no runtime dependencies"
    assert all(runtime.values()), {k: v for k, v in runtime.items() if not v}
    assert {"dask": "2026.8.0", "distributed": "2026.8.0", "dask-jobqueue": "0.9.0",
            "bokeh": "3.9.0"}.items() <= runtime.items()
    # pycaffe imports these; the kit's own code may not
    assert {"six", "protobuf", "scikit-image", "numpy", "scipy"} <= runtime.keys()


def test_test_and_lint_tools_are_a_pinned_extra_not_runtime_dependencies():
    project = _project()
    assert not TOOLS & _pins(project["dependencies"]).keys()
    extra = _pins(project["optional-dependencies"]["test"])
    assert extra.keys() >= TOOLS
    assert all(extra.values()), extra


def test_requirements_txt_pins_the_declared_packages_at_the_same_versions():
    project = _project()
    declared = _pins(project["dependencies"] + project["optional-dependencies"]["test"])
    lock = _requirements_txt()
    assert all(lock.values()), {k: v for k, v in lock.items() if not v}
    differ = {name: (version, lock.get(name)) for name, version in declared.items()
              if lock.get(name) != version}
    assert not differ, f"pyproject pin vs requirements.txt: {differ}"


def test_requirements_txt_pins_everything_the_declared_packages_pull_in():
    project = _project()
    env = default_environment()
    lock = _requirements_txt()
    todo = [Requirement(r) for r in project["dependencies"]
            + project["optional-dependencies"]["test"]]
    seen, unpinned = set(), []
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        if name not in lock:
            unpinned.append(name)
            continue
        for text in metadata.requires(name) or []:
            sub = Requirement(text)
            if sub.marker is None or sub.marker.evaluate({**env, "extra": ""}):
                todo.append(sub)
    assert not unpinned, f"installed by the declared packages but not in requirements.txt: " \
                         f"{sorted(unpinned)}"
