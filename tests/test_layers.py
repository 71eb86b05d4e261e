"""The structure the README's Layout section describes: SQL only in ``model/``, and no
import of the extension's own modules inside a function (where it would get round the
layers' contracts that ``lint-imports`` checks, pyproject.toml)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ckanext" / "dcor_depot"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "migration" not in p.parts)
#: calls that make SQL: text, Core statements, ORM queries and executions
SQL_CALLS = {"text", "select", "update", "delete", "insert", "union", "query", "execute"}


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


def _sql_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            if node.func.attr in SQL_CALLS and (
                owner in ("sa", "sqlalchemy") or owner.endswith(("Session", "connection"))
            ):
                found.append(f"line {node.lineno}: {ast.unparse(node.func)}")
    return found


def test_sql_is_written_only_in_the_model_package():
    outside = [p for p in MODULES if p.relative_to(PACKAGE).parts[0] != "model"]
    found = {_name(p): _sql_calls(ast.parse(p.read_text())) for p in outside}
    assert {name: calls for name, calls in found.items() if calls} == {}


def test_the_check_for_sql_finds_sql():
    assert _sql_calls(ast.parse("model.Session.execute(sa.text('SELECT 1'))")) == [
        "line 1: model.Session.execute",
        "line 1: sa.text",
    ]


def _inner_imports(tree: ast.AST) -> list[str]:
    found = []
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (
                    node.level or (node.module or "").startswith("ckanext.dcor_depot")
                ):
                    found.append(f"line {node.lineno}: {ast.unparse(node)}")
                elif isinstance(node, ast.Import) and any(
                    alias.name.startswith("ckanext.dcor_depot") for alias in node.names
                ):
                    found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_imports_the_extension_inside_a_function():
    found = {_name(p): _inner_imports(ast.parse(p.read_text())) for p in MODULES}
    assert {name: imports for name, imports in found.items() if imports} == {}


def test_the_check_for_inner_imports_finds_them():
    code = "def f():\n    from .jobs import move\n    import ckanext.dcor_depot.jobs.move\n"
    assert _inner_imports(ast.parse(code)) == [
        "line 2: from .jobs import move",
        "line 3: import ckanext.dcor_depot.jobs.move",
    ]


def test_the_scripts_and_benchmarks_import_what_exists():
    """The demo's walkthrough and the benchmarks import the extension inside functions
    (after CKAN's config is loaded), where no linter follows a module that moved."""
    missing = []
    for path in sorted(
        [*PACKAGE.parents[1].glob("scripts/*.py"), *PACKAGE.parents[1].glob("benchmarks/*.py")]
    ):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "ckanext.dcor_depot"
            ):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    if not hasattr(module, alias.name) and importlib.util.find_spec(name) is None:
                        missing.append(f"{path.name}:{node.lineno}: {name}")
    assert missing == []
