"""One test kit: test modules share helpers through tests/support*.py, tests/fakes/ and conftest fixtures, and
never import one another (a helper living in a test module drags that module's tests and fixtures along)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(source: str, path: Path) -> list[str]:
    """Every module the source of `path` imports, relative imports resolved against its package."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found: list[str] = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found += [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return found


def is_test_module(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    return module.split(".")[0] == "tests" and (leaf.startswith("test_") or leaf == "conftest")


def test_no_test_module_imports_another_test_module() -> None:
    sources = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/**/*.py")]
    offenders = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sources
        if "vendor" not in path.parts
        for module in imported_modules(path.read_text(), path)
        if is_test_module(module)
    }
    assert len(sources) > 50  # the globs found the suite
    assert sorted(offenders) == []


def test_the_check_sees_every_way_of_importing_a_test_module() -> None:
    """The checker itself: absolute, relative and plain imports of test modules are caught, kit imports are not."""
    sample = ROOT / "tests" / "unit" / "test_sample_for_the_kit_check.py"
    code = (
        "from tests.integration.test_history import person\n"
        "from .test_agents import ScriptedLLM\n"
        "from . import conftest\n"
        "import tests.e2e.test_csp_ui\n"
        "from tests.support import signup\n"
        "from tests.fakes.llm import ScriptedLLM\n"
    )
    found = [m for m in imported_modules(code, sample) if is_test_module(m)]
    assert found == [
        "tests.integration.test_history",
        "tests.unit.test_agents",
        "tests.unit.conftest",
        "tests.e2e.test_csp_ui",
    ]
