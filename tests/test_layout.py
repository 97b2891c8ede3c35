"""The direction of imports, as docs/overview.md states it, checked on the source tree.

Each rule names what it protects: the station must run without the server's libraries,
the storage must not know the features, a route must not reach past its feature's
services into SQL, and the packages must be small enough to read.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
TOPS = ("edge", "server", "qrgate", "provisioning")
# The modules that put the server together; they alone may import route modules.
COMPOSITION = {"server.web.app", "server.cli", "server.scheduler"}
# The web layer every feature uses; it must not know the features (their types it may
# name under TYPE_CHECKING).
WEB_CORE = {"server.web.deps", "server.web.middleware", "server.web.pages", "server.web.i18n",
            "server.web.routes", "server.web"}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for top in TOPS for p in (ROOT / top).rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, at its top or inside a function, except
    under ``if TYPE_CHECKING:`` (names for the type checker, never loaded)."""
    found: set[str] = set()
    todo = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        todo.extend(ast.iter_child_nodes(node))
    sources = _sources_cached()
    # "from server.checkins import routes" names the module server.checkins.routes.
    return {name for name in found if name.split(".")[0] in TOPS and name in sources}


_CACHE: dict[str, Path] = {}


def _sources_cached() -> dict[str, Path]:
    if not _CACHE:
        _CACHE.update(_sources())
    return _CACHE


def _graph() -> dict[str, set[str]]:
    return {name: _imports(path) for name, path in _sources_cached().items()}


def _feature(name: str) -> str | None:
    """The feature package of a server module (server.checkins.history -> checkins)."""
    parts = name.split(".")
    if parts[0] != "server" or len(parts) < 3:
        return None
    return parts[1]


def _is_route_module(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return name.startswith("server.") and (last == "routes" or last.endswith("_routes")) and name != "server.web.routes"


def _offences(rule) -> list[str]:
    return sorted(f"{a} imports {b}" for a, targets in _graph().items() for b in targets if rule(a, b))


def test_the_station_never_imports_the_server():
    assert _offences(lambda a, b: a.startswith("edge") and b.startswith("server")) == []


def test_the_station_runs_without_the_servers_libraries():
    # Direct imports are not all: what the station loads must not pull the server, its
    # web framework or its database drivers in (a station's venv has none of them).
    script = ("import sys, edge.app, edge.cli, edge.service, edge.selftest\n"
              "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('server', 'fastapi', 'psycopg', 'jinja2'))\n"
              "print(','.join(bad))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_server_never_imports_the_station():
    assert _offences(lambda a, b: a.startswith("server") and b.startswith("edge")) == []


def test_the_shared_library_imports_neither_side():
    # qrgate.demo puts a whole demo together (server, broker, a station): the one exception.
    assert _offences(lambda a, b: a.startswith("qrgate") and a != "qrgate.demo"
                     and b.split(".")[0] in ("edge", "server", "provisioning")) == []


def test_storage_knows_no_feature():
    allowed = ("server.storage", "server.config")
    assert _offences(lambda a, b: a.startswith("server.storage") and b.startswith("server")
                     and not b.startswith(allowed)) == []


def test_the_web_layer_knows_no_feature():
    assert _offences(lambda a, b: a in WEB_CORE and b.startswith("server")
                     and not b.startswith(("server.web", "server.config"))) == []


def test_routes_reach_the_database_only_through_their_services():
    # The Storage type (server/storage/__init__.py) is fine; its backends and SQL are not.
    assert _offences(lambda a, b: _is_route_module(a) and b.startswith("server.storage.")) == []


def test_only_the_composition_root_includes_routers():
    assert _offences(lambda a, b: _is_route_module(b) and a not in COMPOSITION and _feature(a) != _feature(b)) == []
    assert _offences(lambda a, b: b == "server.web.app" and a.startswith("server") and a not in COMPOSITION) == []


def test_feature_services_import_each_other_without_cycles():
    # Route modules may use any feature's services; the services themselves form layers.
    edges: dict[str, set[str]] = defaultdict(set)
    for a, targets in _graph().items():
        if _feature(a) is None or _is_route_module(a) or a in COMPOSITION or a in WEB_CORE:
            continue
        for b in targets:
            if _feature(b) and _feature(b) != _feature(a) and not _is_route_module(b):
                edges[_feature(a)].add(_feature(b))
    cycles = []
    for start in sorted(edges):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    cycles.append(" -> ".join(path + [start]))
                elif nxt not in path:
                    stack.append((nxt, path + [nxt]))
    assert cycles == [], dict(edges)


def test_every_module_is_short_enough_to_read_and_says_what_it_is_for():
    long, undocumented = [], []
    for name, path in _sources_cached().items():
        if not name.startswith(("server", "edge")):
            continue
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_LINES:
            long.append(f"{name}: {text.count(chr(10))} lines")
        if text.strip() and ast.get_docstring(ast.parse(text)) is None:
            undocumented.append(name)
    assert long == []
    assert undocumented == []


def test_create_app_includes_every_router_by_name():
    app_source = (ROOT / "server" / "web" / "app.py").read_text(encoding="utf-8")
    assert "import_module" not in app_source and "make_router" not in app_source
    routers = {name for name in _sources_cached() if _is_route_module(name) or name == "server.web.routes"}
    routers.add("server.ingest.metrics")
    assert routers <= _imports(ROOT / "server" / "web" / "app.py")
