"""Layer rules (docs/architecture.md), each checked over the tree and seen to fail on a
planted violation, so a check that stopped looking would be noticed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server" / "conveyor_server"

#: Modules that are protobuf or gRPC; the server imports them only in rpc/ and the wiring.
_PROTOBUF = ("grpc", "google.protobuf", "conveyor.v1", "grpc_health", "grpc_reflection")
#: Server files allowed to import them: the RPC layer and the wiring. commands/ may use the
#: public client (`conveyor`), which brings its own channel.
_PROTOBUF_ALLOWED = ("rpc/", "app.py", "upgrades.py", "commands/", "testing/")
#: What the pure core may not import: I/O, threads, event loops, clocks and sleeps.
_IMPURE = ("asyncio", "time", "threading", "socket", "subprocess", "pathlib", "io", "shutil",
           "os", "lmdb", "logging", "concurrent.futures.thread", "selectors",
           *_PROTOBUF, "prometheus_client")  # fmt: skip
#: The one place each impurity is the point: the injected clock reads the time, ids read
#: the OS's randomness once per process.
_CORE_EXCEPTIONS = {"core/clock.py": {"time"}, "core/ids.py": {"os"}}
_IMPURE_CALLS = ("open", "print", "input", "__import__", "exec", "eval")


def _imports(tree: ast.AST) -> set[str]:
    """Modules imported at run time (imports under `if TYPE_CHECKING:` are left out)."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            hidden.update(id(child) for child in ast.walk(node))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom):  # relative: unseen by the rules, so refused
            names.add("." * node.level + (node.module or ""))
    return names


def _dynamic_imports(tree: ast.AST) -> list[str]:
    """Imports by name (`__import__("x")`, `importlib.import_module("x")`): unseen by layer
    rules, so not allowed in the server at all."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name in ("__import__", "importlib.import_module", "import_module"):
                found.append(ast.unparse(node))
    return found


def _calls(tree: ast.AST, names: tuple[str, ...]) -> list[str]:
    return [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names
    ]


def _matches(module: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def core_violations(relative: str, source: str) -> list[str]:
    """Why a core module is not pure: impure imports, other server layers, I/O calls."""
    tree = ast.parse(source)
    allowed = _CORE_EXCEPTIONS.get(relative, set())
    bad = [m for m in _imports(tree) if _matches(m, _IMPURE) and not _matches(m, allowed)]
    bad += [
        m
        for m in _imports(tree)
        if (m.startswith("conveyor_server.") and not m.startswith("conveyor_server.core"))
        or m.startswith(".")
    ]
    return sorted(bad) + _calls(tree, _IMPURE_CALLS) + _dynamic_imports(tree)


def server_violations(relative: str, source: str) -> list[str]:
    """Why a server module breaks the layer rules outside the core."""
    tree = ast.parse(source)
    imports = _imports(tree)
    bad = [m for m in imports if _matches(m, ("conveyor_worker", "bench"))]
    if not relative.startswith(_PROTOBUF_ALLOWED):
        bad += [m for m in imports if _matches(m, _PROTOBUF)]
    if relative != "store/lmdb_store.py":
        bad += [m for m in imports if _matches(m, ("lmdb",))]
    if relative != "store/pg_store.py":  # the PostgreSQL driver: one module
        bad += [m for m in imports if _matches(m, ("psycopg", "asyncpg"))]
    bad += [m for m in imports if m.startswith(".")]  # relative imports hide the layer
    if relative.startswith("service/"):  # rpc -> service -> core: never back up
        bad += [m for m in imports if _matches(m, ("conveyor_server.rpc", "conveyor_server.app"))]
    if relative.startswith("store/"):
        bad += [m for m in imports if m.startswith("conveyor_server.") and not m.startswith(
            ("conveyor_server.store", "conveyor_server.core"))]  # fmt: skip
    return sorted(bad) + _dynamic_imports(tree)


def client_violations(source: str) -> list[str]:
    return sorted(m for m in _imports(ast.parse(source)) if _matches(m, ("conveyor_server",
                  "conveyor_worker", "bench")))  # fmt: skip


def _server_files() -> list[Path]:
    return sorted(SERVER.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(SERVER).as_posix()


@pytest.mark.parametrize("path", sorted((SERVER / "core").rglob("*.py")), ids=_rel)
def test_the_core_is_pure(path: Path):
    assert core_violations(_rel(path), path.read_text()) == []


@pytest.mark.parametrize("path", _server_files(), ids=_rel)
def test_server_modules_keep_to_their_layer(path: Path):
    assert server_violations(_rel(path), path.read_text()) == []


def test_the_client_imports_neither_server_nor_worker():
    for path in (ROOT / "client_py" / "conveyor").rglob("*.py"):
        if "v1" not in path.parts:
            assert client_violations(path.read_text()) == [], path


def test_the_worker_sdk_does_not_import_the_server():
    for path in (ROOT / "worker_sdk" / "conveyor_worker").rglob("*.py"):
        bad = [
            m for m in _imports(ast.parse(path.read_text())) if _matches(m, ("conveyor_server",))
        ]
        assert bad == [], path


# -- the checks themselves fail on planted violations ---------------------------------


@pytest.mark.parametrize(
    "planted",
    [
        "import time\nnow = time.time()",
        "import asyncio",
        "from time import sleep",
        "import grpc",
        "from conveyor.v1 import task_pb2",
        "from conveyor_server.store.lmdb_store import LmdbStore",
        "from conveyor_server.service.engine import Engine",
        "data = open('x').read()",
        "print('hello')",
        "m = __import__('os')",
        "import os.path",
        "from ..service import engine",
    ],
)
def test_core_check_catches_a_planted_violation(planted: str):
    assert core_violations("core/broker.py", planted)


def test_core_check_allows_the_declared_exceptions_only():
    assert core_violations("core/clock.py", "import time") == []
    assert core_violations("core/broker.py", "import time")
    type_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import asyncio\n"
    assert core_violations("core/broker.py", type_only) == []


@pytest.mark.parametrize(
    ("relative", "planted"),
    [
        ("cli.py", "from conveyor_worker import Worker"),
        ("cli.py", "import bench.run"),
        ("cli.py", "commands = __import__('conveyor_worker._cli')"),
        ("cli.py", "import importlib\nimportlib.import_module('bench.run')"),
        ("service/engine.py", "from conveyor.v1 import task_pb2"),
        ("store/kv_txn.py", "from conveyor_server.rpc.schedule_codec import decode_schedule"),
        ("store/memory.py", "import lmdb"),
        ("store/pg_txn.py", "import psycopg"),
        ("store/kv_txn.py", "from google.protobuf import timestamp_pb2"),
        ("service/engine.py", "from conveyor_server.rpc import convert"),
        ("service/engine.py", "from ..rpc import convert"),
        ("store/kv_txn.py", "from . import record"),
    ],
)
def test_server_check_catches_a_planted_violation(relative: str, planted: str):
    assert server_violations(relative, planted)


def test_client_check_catches_a_planted_violation():
    assert client_violations("from conveyor_worker import Worker")
    assert client_violations("import conveyor_server.app")
