"""Route handlers stay thin: they parse, call a service and render, so none is longer than 15 lines.

Counted by ast over every route handler in the package: the statements of its body after the docstring (the
signature, decorators and docstring say what it takes; they are not work it does). A handler that needs more is
doing a service's work (queries, rules, metrics) or a view's (building a context), which belong elsewhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import chatapp

SRC = Path(chatapp.__file__).parent
MAX_LINES = 15
ROUTE_DECORATORS = {"get", "post", "put", "patch", "delete", "head", "route", "websocket"}


def is_route_handler(node: ast.AST) -> bool:
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name in ROUTE_DECORATORS:
            return True
    return False


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        body = body[1:]
    if not body:
        return 0
    end = body[-1].end_lineno
    assert end is not None
    return end - body[0].lineno + 1


def handler_lengths(source: str, where: str) -> dict[str, int]:
    return {
        f"{where}:{node.lineno} {node.name}": body_lines(node)
        for node in ast.walk(ast.parse(source, where))
        if is_route_handler(node) and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def all_handler_lengths() -> dict[str, int]:
    found: dict[str, int] = {}
    for path in sorted(SRC.rglob("*.py")):
        found |= handler_lengths(path.read_text(), str(path.relative_to(SRC.parent)))
    return found


def test_no_route_handler_is_longer_than_15_lines() -> None:
    lengths = all_handler_lengths()
    assert len(lengths) > 40  # every controller's handlers were found
    assert {where: n for where, n in lengths.items() if n > MAX_LINES} == {}


def test_the_count_sees_decorated_handlers_and_skips_their_docstring() -> None:
    """The checker itself: a long handler is caught whichever way its decorator is spelled; a long helper and a
    docstring are not counted."""
    work = "".join(f"    x{n} = {n}\n" for n in range(MAX_LINES + 1))
    source = (
        "from litestar import get\n"
        "import litestar\n\n"
        f'@get("/a")\nasync def long_a() -> None:\n    """Why."""\n{work}\n'
        f'@litestar.post("/b", status_code=204)\nasync def long_b() -> None:\n{work}\n'
        f'@get("/c")\nasync def short() -> None:\n    """A docstring\n    over lines."""\n    return None\n\n'
        f"def helper() -> None:\n{work}"
    )
    found = {where.split()[-1]: n for where, n in handler_lengths(source, "sample.py").items()}
    assert found == {"long_a": MAX_LINES + 1, "long_b": MAX_LINES + 1, "short": 1}
