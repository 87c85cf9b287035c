"""The code's layering stays true, and the folders show it: `src/chatapp/` holds the app's entry modules and one
folder per layer or feature; every module imports only its own layer or the ones below, and no modules import
each other in a cycle.

The layers, lowest first (a module belongs to the layer of its top folder under `chatapp/`):

1. core: the foundation — settings, database, migrations, tables, validation, logging, metrics, OpenAPI helpers,
   test faults: no feature in them (the package's own `__init__` sits here too: it only names the Piccolo conf).
2. accounts: users, login sessions and their store, the auth guard and error answers (`web`), rate limits.
3. conversations: the live conversation, its transcript pipeline, and the agent interface it drives
   (`conversations.agent_runtime`) with how an outside agent reaches it (`conversations.agent_access`).
4. agents: the product agent and the in-process runtime.
5. livekit: the LiveKit runtime, webhook, and the worker that runs the product agent in a room.
6. history: saved conversations: list, search, export, import, sharing, the idle reaper.
7. profile: the account page, which exports and deletes everything a user has (so it sits on history).
8. app: `app.py` (`create_app`), `server/` (what only the app uses to serve: security headers, assets, readiness,
   the HTTP protocol, the worker supervisor), `cli.py` and `__main__.py`.

Every import counts, including ones inside functions and under TYPE_CHECKING: a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import chatapp

SRC = Path(chatapp.__file__).parent
# Each layer by the names under chatapp/ it holds: folders, and (top layer only) the entry modules.
LAYERS: list[tuple[str, list[str]]] = [
    ("core", ["__init__", "core"]),
    ("accounts", ["accounts"]),
    ("conversations", ["conversations"]),
    ("agents", ["agents"]),
    ("livekit", ["livekit"]),
    ("history", ["history"]),
    ("profile", ["profile"]),
    ("app", ["server", "app", "cli", "__main__"]),
]
# The only modules that lie loose in chatapp/; everything else lives in a layer's folder.
ENTRY_MODULES = {"__init__.py", "__main__.py", "app.py", "cli.py"}


def modules(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package at `src` by its dotted name (a package by its own name)."""
    found = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer_of(module: str) -> int:
    """The index of the layer holding `module`: the one naming its top folder (or top module) under chatapp/."""
    top = module.split(".")[1] if "." in module else "__init__"
    for index, (_, names) in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} is in no layer: put it in a layer's folder, or add its folder to LAYERS")


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


def import_graph(src: Path = SRC) -> dict[str, dict[str, int]]:
    known = modules(src)
    graph: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        graph[module] = {}
        for target, line in imports(module, path, known):
            graph[module].setdefault(target, line)
    return graph


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import from a lower layer's folder into a higher one's, as `module:line imports target (a -> b)`."""
    return [
        f"{module}:{line} imports {target} ({LAYERS[layer_of(module)][0]} -> {LAYERS[layer_of(target)][0]})"
        for module, targets in sorted(graph.items())
        for target, line in sorted(targets.items())
        if layer_of(target) > layer_of(module)
    ]


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
    assert upward_imports(import_graph()) == []


def test_no_modules_import_each_other_in_a_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_package_holds_only_the_entry_modules_and_one_folder_per_layer() -> None:
    loose = sorted(path.name for path in SRC.glob("*.py") if path.name not in ENTRY_MODULES)
    folders = {path.name for path in SRC.iterdir() if path.is_dir() and any(path.glob("*.py"))}
    named = {name for _, names in LAYERS for name in names}
    assert loose == []
    assert sorted(folders - named) == []  # a folder in no layer
    assert all((SRC / name).is_dir() or (SRC / f"{name}.py").is_file() for name in named)  # no stale entry
    assert all((SRC / folder / "__init__.py").is_file() for folder in folders)  # packages, not namespace dirs


def test_an_import_from_a_lower_folder_into_a_higher_one_fails(tmp_path: Path) -> None:
    """The check itself, on a small package: core reaching up into history (lazily, inside a function) is
    reported with its line; history using core, and a module using its own folder, are not."""
    package = tmp_path / "chatapp"
    for folder in ("core", "history"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "history" / "service.py").write_text("from chatapp.core import settings\nfrom . import views\n")
    (package / "history" / "views.py").write_text("")
    lazy_upward = "import os\n\n\ndef later():\n    from chatapp.history import service\n"
    (package / "core" / "settings.py").write_text(lazy_upward)
    assert upward_imports(import_graph(package)) == [
        "chatapp.core.settings:5 imports chatapp.history.service (core -> history)"
    ]


def test_the_checks_see_what_they_must() -> None:
    """The graph is not vacuous: known edges are found, lazy imports included, and a cycle would be caught."""
    graph = import_graph()
    assert len(graph) > 50
    assert "chatapp.conversations.agent_runtime" in graph["chatapp.conversations.service"]
    assert "chatapp.livekit.worker" in graph["chatapp.cli"]  # imported inside a function
    assert layer_of("chatapp.accounts.session_store") < layer_of("chatapp.conversations.queries")
    assert layer_of("chatapp.conversations.queries") < layer_of("chatapp.profile.service")
    assert layer_of("chatapp") < layer_of("chatapp.server.security") == layer_of("chatapp.app")
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
