"""The layout ARCHITECTURE.md describes, checked on the source: the package root holds only
the shared kernel, packages depend on each other in one direction, and no module reaches into
another package's private modules."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "tbxsweep"
ROOT_MODULES = {"__init__", "__main__", "errors", "paths", "jobs"}
# Each part may import only the parts before it (and itself): the order of ARCHITECTURE.md's
# dependency rule. The kernel (errors, paths, jobs) sits below every stage.
ORDER = [
    "errors",
    "paths",
    "spec",
    "jobs",
    "study",
    "tblog",
    "trial",
    "worker",
    "export",
    "schedule",
    "cli",
    "__main__",
]


def _part(module: str) -> str:
    """`tbxsweep.study._build` -> `study`; `tbxsweep.paths` -> `paths`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> list[tuple[str, int, str]]:
    """(file relative to the repository, line, module imported) for every tbxsweep import,
    at module level or inside a function."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [(rel, node.lineno, n) for n in names if n.startswith("tbxsweep.")]
    return found


def _owner(rel: str) -> str:
    """The part a source file belongs to: `tbxsweep/study/_build.py` -> `study`."""
    parts = Path(rel).with_suffix("").parts
    return parts[1]


def test_the_package_root_holds_only_the_kernel_and_the_entry_point() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == ROOT_MODULES
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(ORDER) - ROOT_MODULES - {"errors", "paths", "jobs"}


def test_no_module_imports_another_packages_private_modules() -> None:
    private = [
        f"{rel}:{line}: {name}"
        for rel, line, name in _imports()
        if any(p.startswith("_") and not p.startswith("__") for p in name.split(".")[2:3])
        and _part(name) != _owner(rel)
    ]
    assert private == []


def test_parts_depend_on_each_other_in_one_direction() -> None:
    backwards = []
    for rel, line, name in _imports():
        mine, theirs = _owner(rel), _part(name)
        if theirs == "__version__":  # `from tbxsweep import __version__`: the root
            continue
        if theirs in ("", mine) or mine not in ORDER:
            continue
        if ORDER.index(theirs) > ORDER.index(mine):
            backwards.append(f"{rel}:{line}: {mine} imports {name}")
    assert backwards == []
