"""Source hygiene that merges break silently: a second ``def`` of the same name in one class or module
replaces the first without a word (a lost ``__post_init__`` check was found this way)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("clisc", "baselines", "benchmarks", "scripts", "tests")


def redefinitions(path: Path) -> list[str]:
    """``name (line first, line again)`` for every undecorated function defined twice in one scope."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.Module, ast.ClassDef)):
            seen: dict[str, int] = {}
            for child in node.body:
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and not child.decorator_list:
                    if child.name in seen:  # (@overload / @property.setter stubs are decorated)
                        found.append(f"{child.name} (lines {seen[child.name]} and {child.lineno})")
                    seen[child.name] = child.lineno
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_defined_twice_in_one_scope(package: str) -> None:
    problems = {str(p.relative_to(ROOT)): r for p in sorted((ROOT / package).rglob("*.py")) if (r := redefinitions(p))}
    assert not problems, problems


def test_the_check_sees_a_redefinition(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("class A:\n    def f(self): ...\n    def f(self): ...\n")
    assert redefinitions(source) == ["f (lines 2 and 3)"]
