"""The code's layering stays true: every `chatapp` module imports only its own layer or the ones below, and no
modules import each other in a cycle.

The layers, lowest first (a module belongs to the most specific entry that names it or its package):

1. foundation: settings, database, migrations, tables, validation, logging, metrics, OpenAPI helpers, static
   assets, test faults: no feature in them.
2. accounts: users, login sessions, the auth guard and error pages (`web`), rate limits (stored per user).
3. conversations: the live conversation, its transcript pipeline, and the agent interface it drives
   (`conversations.agent_runtime`) with how an outside agent reaches it (`conversations.agent_access`).
4. agents: the product agent and the in-process runtime.
5. livekit: the LiveKit runtime, webhook, and the worker that runs the product agent in a room.
6. history: saved conversations: list, search, export, import, sharing, the idle reaper.
7. account pages: the settings page, which exports and deletes everything a user has (so it sits on history).
8. app: `create_app` and what only it uses (security headers), the CLI.

Every import counts, including ones inside functions and under TYPE_CHECKING: a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import chatapp

SRC = Path(chatapp.__file__).parent
LAYERS: list[tuple[str, list[str]]] = [
    (
        "foundation",
        [
            "chatapp",
            "chatapp.core",
        ],
    ),
    ("accounts", ["chatapp.accounts"]),
    ("conversations", ["chatapp.conversations"]),
    ("agents", ["chatapp.agents"]),
    ("livekit", ["chatapp.livekit"]),
    ("history", ["chatapp.history"]),
    ("account pages", ["chatapp.profile"]),
    ("app", ["chatapp.app", "chatapp.server", "chatapp.cli", "chatapp.__main__"]),
]


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer_of(module: str) -> int:
    """The index of the layer whose most specific entry is `module` or a package holding it."""
    best: tuple[int, int] | None = None  # (length of the entry, layer index)
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            # The root package is an entry for itself only, not for everything under it.
            holds = module.startswith(entry + ".") and entry != "chatapp"
            if (module == entry or holds) and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    assert best is not None, f"{module} is in no layer: add it to LAYERS in {__name__}"
    return best[1]


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The `chatapp` modules `module` imports, each with its line number."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import name` imports the module pkg.name when there is one, else pkg itself.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            # `import chatapp.x.y` binds and runs chatapp.x.y: the longest known prefix is what is used.
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name, node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    known = modules()
    graph: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        graph[module] = {}
        for target, line in imports(module, path, known):
            graph[module].setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_imports_only_its_layer_or_below() -> None:
    graph = import_graph()
    upward = [
        f"{module}:{line} imports {target} ({LAYERS[layer_of(module)][0]} -> {LAYERS[layer_of(target)][0]})"
        for module, targets in sorted(graph.items())
        for target, line in sorted(targets.items())
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_no_modules_import_each_other_in_a_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_checks_see_what_they_must() -> None:
    """The graph is not vacuous: known edges are found, lazy imports included, and a cycle would be caught."""
    graph = import_graph()
    assert len(graph) > 50
    assert "chatapp.conversations.agent_runtime" in graph["chatapp.conversations.service"]
    assert "chatapp.livekit.worker" in graph["chatapp.cli"]  # imported inside a function
    assert layer_of("chatapp.accounts.session_store") < layer_of("chatapp.conversations.queries")
    assert layer_of("chatapp.conversations.queries") < layer_of("chatapp.profile.service")
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
