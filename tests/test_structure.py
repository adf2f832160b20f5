"""The code's shape: packages that name layers, imports that run one way (down this list),
nothing connected or started by importing them, and apps built by a factory from settings."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.processes import ROOT

# Bottom to top: a unit imports only units before it.
LAYERS = (
    "core",  # settings, errors, outages, logs, Redis clients, the broadcast
    "telemetry",  # metrics and traces: every layer above records into it
    "serving",  # gunicorn's config, the worker, uvicorn's protocols, the request's edge
    "db",  # the record, behind plain async functions
    "identity",  # tokens, viewers, revocations
    "execution",  # the transport-free GraphQL pipeline
    "limits",  # refusals: body size, query shape and cost, rates
    "live",  # the engine: topics and bytes
    "resolvers",  # the schema's behaviour: rooms, members, messages
    "transports",  # one module per wire protocol
    "composition",  # the one composition root
    "app",  # routes and the lifespan
)
PACKAGES = tuple(unit for unit in LAYERS if unit != "app")
MODULES = tuple(
    path.stem
    for path in sorted(ROOT.glob("*.py"))
    if path.stem not in ("conftest",) and not path.stem.startswith("test")
)
UNITS = frozenset(PACKAGES + MODULES)


def _files(unit: str) -> list[Path]:
    if unit in PACKAGES:
        return [path for path in (ROOT / unit).rglob("*.py") if "migrations" not in path.parts]
    return [ROOT / f"{unit}.py"]


def import_graph() -> dict[str, set[str]]:
    """unit -> the other units it imports (anywhere in its files, functions included)."""
    graph: dict[str, set[str]] = {unit: set() for unit in UNITS}
    for unit in UNITS:
        for path in _files(unit):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    target = name.split(".")[0]
                    if target in UNITS and target != unit:
                        graph[unit].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(unit: str) -> list[str] | None:
        state[unit] = 1
        stack.append(unit)
        for target in sorted(graph[unit]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[unit] = 2
        return None

    for unit in sorted(graph):
        if unit not in state and (cycle := visit(unit)):
            return cycle
    return None


def test_the_top_level_is_app_py_and_packages_that_name_layers() -> None:
    assert MODULES == ("app",), MODULES
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(PACKAGES), packages


def test_imports_run_one_way_down_the_layers() -> None:
    graph = import_graph()
    upward = sorted(
        (unit, target)
        for unit, targets in graph.items()
        for target in targets
        if LAYERS.index(target) > LAYERS.index(unit)
    )
    assert upward == [], upward
    assert find_cycle(graph) is None, find_cycle(graph)


def test_the_live_engine_knows_topics_not_rooms() -> None:
    graph = import_graph()
    # Nothing of rooms, sockets or the database: not the record, the resolvers, the wire.
    assert not graph["live"] & {"db", "resolvers", "transports", "serving"}, graph["live"]
    assert graph["db"] <= {"core", "telemetry"}, graph["db"]


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_importing_everything_connects_nothing_and_starts_nothing() -> None:
    """Run in a fresh interpreter: pools, Redis clients, the broadcast and the engine are made by
    the app's lifespan, never by an import."""
    modules = [*sorted({*MODULES, *PACKAGES} - {"serving"}), "serving"]  # the worker last, as gunicorn does
    script = textwrap.dedent(
        f"""
        import asyncio, importlib, os, pkgutil, threading
        for name in {modules!r}:
            module = importlib.import_module(name)
            for info in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
                if ".migrations" not in info.name and "gunicorn" not in info.name:
                    importlib.import_module(info.name)
        sockets = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                sockets += os.readlink(f"/proc/self/fd/{{fd}}").startswith("socket:")
            except FileNotFoundError:  # the listing's own descriptor
                pass
        print(sockets, threading.active_count())
        try:
            asyncio.get_running_loop()
            print("loop")
        except RuntimeError:
            print("no loop")
        """
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/x",
        "REDIS_URL": "redis://127.0.0.1:1",
    }
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "1", "no", "loop"], result.stdout


def test_apps_are_built_from_settings_without_touching_the_environment() -> None:
    script = textwrap.dedent(
        """
        from app import create_app
        from core.settings import load
        one = create_app(load({"DATABASE_URL": "sqlite:////tmp/one.db", "CHANNEL_PREFIX": "one:"}))
        two = create_app(load({"DATABASE_URL": "postgres://u@h/d", "REDIS_URL": "redis://h", "WEB_CONCURRENCY": "3"}))
        assert one.settings.database_url == "sqlite:////tmp/one.db" and one.settings.web_concurrency == 1
        assert two.settings.redis_url == "redis://h" and two.settings.web_concurrency == 3
        assert one.schema is not two.schema
        # Opened by the lifespan only, and reached through each request's scope, not the app.
        assert not vars(one.http.state)["_state"] and not hasattr(one, "services") and not hasattr(one, "parts")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
