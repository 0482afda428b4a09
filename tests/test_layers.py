"""The layering of the packages (docs/CONTRACTS.md): every import of every module, parsed with ast
(imports inside functions included), runs only to packages of an earlier tier; no package imports
one of its own tier; the model opens no database and knows no web framework."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The allowed order: a package may import its own modules and those of earlier tiers only.
TIERS: list[tuple[str, ...]] = [
    ("imagery",),
    ("model",),
    ("db",),
    ("pipeline",),
    ("review",),
    ("analysis",),
    ("simulation", "labeller"),
]
PACKAGES = {package: rank for rank, tier in enumerate(TIERS) for package in tier}
#: Imports that break the order, each with its reason (none today: keep it empty).
KNOWN_EXCEPTIONS: dict[str, set[str]] = {}
#: Outside libraries a package must never import.
FORBIDDEN: dict[str, set[str]] = {
    "imagery": {"flask", "sqlite3", "sqlite_utils", "keras"},
    "model": {"flask", "sqlite3", "sqlite_utils"},
    "db": {"flask"},
    "pipeline": {"flask"},
    "review": {"flask"},
    "analysis": {"flask"},
    "simulation": {"flask"},
}


def imported_roots(path: Path) -> set[str]:
    """The top-level names of every module that the file imports, anywhere in it."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def modules_of(package: str) -> list[Path]:
    """Every Python file of a package."""
    return sorted((ROOT / package).rglob("*.py"))


def test_every_package_on_disk_has_a_tier() -> None:
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert on_disk == set(PACKAGES)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_run_only_to_earlier_tiers(package: str) -> None:
    rank = PACKAGES[package]
    wrong = {}
    for path in modules_of(package):
        name = path.relative_to(ROOT).as_posix()
        upward = {root for root in imported_roots(path)
                  if root in PACKAGES and root != package and PACKAGES[root] >= rank}
        upward -= KNOWN_EXCEPTIONS.get(name, set())
        if upward:
            wrong[name] = sorted(upward)
    assert wrong == {}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_what_its_layer_must_not_know(package: str) -> None:
    wrong = {path.relative_to(ROOT).as_posix(): sorted(imported_roots(path) & FORBIDDEN[package])
             for path in modules_of(package)}
    assert {name: roots for name, roots in wrong.items() if roots} == {}


def test_the_known_exceptions_are_still_needed() -> None:
    for name, roots in KNOWN_EXCEPTIONS.items():
        assert roots <= imported_roots(ROOT / name), name


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from labeller.review import bp\n    import review.cards\n")
    assert imported_roots(module) == {"labeller", "review"}
