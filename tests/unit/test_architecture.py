"""The architecture as tests (ARCHITECTURE.md, "Layers"): imports run down the layers only, SQL lives in repositories,
and the sphere and the time-zone check exist once. Source is read, never imported: no database, no app."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("kernel", "geofences", "notifications", "services", "mobile_api", "admin", "infra")

# Modules whose job is SQL: each area's repositories, and what builds or benchmarks the database itself (the
# single-machine stack and the cluster create the role, the database and PostGIS).
REPOSITORY_NAME = re.compile(r"(^repository|_repository|_queries)\.py$")
REPOSITORY_PATHS = ("geofences/activity.py", "infra/stack.py", "infra/cluster.py", "infra/migrations/", "bench/")
# Anything else that may touch the database, and why. Keep it short: a new entry needs a reason a reviewer accepts.
SQL_ALLOWED = {
    "infra/app.py": "/ready's `SELECT 1` probe: the database's health, not the application's data",
    "infra/demo.py": "seeds the demo organisation (`placecast demo`): development data, run by no request or job",
    "kernel/audit.py": "the audit log's one INSERT: the kernel's own table, recorded by every area in its transaction",
    "geofences/builder.py": "runs the repository's fences_for_index_query on the builder process's own connection",
}
SQLALCHEMY_BUILDERS = {"text", "select", "insert", "update", "delete"}
SESSION_CALLS = {"execute", "scalar", "scalars", "get", "stream"}
# The receiver of a session call: `session`, `uow.session`, `self._session`, `conn`, `connection`, ...
SESSION_NAME = re.compile(r"(^|_)(session|conn|connection)$")


def production_modules() -> Iterator[tuple[str, ast.Module]]:
    for package in PRODUCTION:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            yield rel, ast.parse(path.read_text(), filename=rel)


def is_repository(rel: str) -> bool:
    return bool(REPOSITORY_NAME.search(rel.rsplit("/", 1)[-1])) or rel.startswith(REPOSITORY_PATHS)


def _receiver_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def sql_calls(tree: ast.Module) -> list[tuple[int, str]]:
    """Calls that build or run SQL: sqlalchemy's statement builders (however imported) and session calls."""
    builders: set[str] = set()  # local names bound to sqlalchemy's builders
    modules: set[str] = set()  # local names bound to sqlalchemy modules
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
            builders.update(a.asname or a.name for a in node.names if a.name in SQLALCHEMY_BUILDERS)
            modules.update(a.asname or a.name for a in node.names if a.name not in SQLALCHEMY_BUILDERS)
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name.split(".")[0] == "sqlalchemy")
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in builders:
            found.append((node.lineno, f"{func.id}()"))
        elif isinstance(func, ast.Attribute):
            owner = _receiver_name(func.value)
            if func.attr in SQLALCHEMY_BUILDERS and isinstance(func.value, ast.Name) and func.value.id in modules:
                found.append((node.lineno, f"{func.value.id}.{func.attr}()"))
            elif func.attr in SESSION_CALLS and owner is not None and SESSION_NAME.search(owner):
                found.append((node.lineno, f"{owner}.{func.attr}()"))
    return found


def test_import_contracts_hold() -> None:
    """pyproject.toml's [tool.importlinter] contracts: the layers, and pure geofence modules free of ORM and web."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_every_infra_module_has_a_layer() -> None:
    """A module in no layer is checked by no contract: a new infra module must be placed (pyproject.toml)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layers] = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    named = {name.strip() for layer in layers for name in re.split(r"[:|]", layer)}
    modules = {f"infra.{p.stem}" for p in (ROOT / "infra").glob("*.py") if p.stem != "__init__"}
    assert modules - named == set()


def test_no_sql_outside_repositories() -> None:
    offenders = [
        f"{rel}:{line}: {call}"
        for rel, tree in production_modules()
        if not is_repository(rel) and rel not in SQL_ALLOWED
        for line, call in sql_calls(tree)
    ]
    assert offenders == [], "SQL belongs in the area's repository module:\n" + "\n".join(offenders)


def test_the_sql_check_sees_what_it_should() -> None:
    """The AST check itself: builders imported any way, session calls on any session-like receiver; no dict.get."""
    source = """
import sqlalchemy as sa
from sqlalchemy import select as pick, text
from sqlalchemy.dialects.postgresql import insert
async def f(session, uow, conn, row):
    sa.update(T); pick(T); text("SELECT 1"); insert(T)
    await session.execute(q); await uow.session.scalar(q); await conn.stream(q); await self._session.get(T, 1)
    row.get("x"); {}.get("y"); headers.get("z")
"""
    calls = [call for _, call in sql_calls(ast.parse(source))]
    expected = ["sa.update()", "pick()", "text()", "insert()"]
    expected += ["session.execute()", "session.scalar()", "conn.stream()", "_session.get()"]
    assert sorted(calls) == sorted(expected)


def _definitions(name_pattern: str) -> list[str]:
    """Where functions or module constants matching `name_pattern` are defined, in production code and bench/."""
    pattern = re.compile(name_pattern)
    found = []
    for path in sorted([*ROOT.glob("*/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith((*PRODUCTION, "bench/")):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and pattern.search(node.name):
                found.append(f"{rel}:{node.name}")
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found += [f"{rel}:{t.id}" for t in targets if isinstance(t, ast.Name) and pattern.search(t.id)]
    return found


def test_one_sphere() -> None:
    """One Earth radius and one haversine of each kind (scalar, numpy), all in geofences/geodesy.py."""
    assert _definitions(r"EARTH_RADIUS|haversine") == [
        "geofences/geodesy.py:EARTH_RADIUS_M",
        "geofences/geodesy.py:haversine_m",
        "geofences/geodesy.py:haversine_m_array",
    ]
    # Nor the radius written out in metres somewhere else (6371008.8, 6371000, 6378137, ...).
    literals = [
        f"{rel}:{node.lineno}"
        for rel, tree in production_modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
        and 6.35e6 < node.value < 6.4e6
        and rel != "geofences/geodesy.py"
    ]
    assert literals == []


def test_one_time_zone_check() -> None:
    """Only kernel/timezones.py asks zoneinfo whether a name is a zone; everyone else calls `time_zone`."""
    checks = [
        f"{rel}:{node.lineno}"
        for rel, tree in production_modules()
        for node in ast.walk(tree)
        if (isinstance(node, ast.Call) and _receiver_name(node.func) == "ZoneInfo")
        or (isinstance(node, ast.Name | ast.Attribute) and _receiver_name(node) == "ZoneInfoNotFoundError")
    ]
    assert sorted({c.split(":")[0] for c in checks}) == ["kernel/timezones.py"], checks


def test_a_worker_process_knows_every_table() -> None:
    """The composition root registers every model: the worker alone (no API routes imported) must be able to flush
    a fence, whose foreign key names `organisations` (it failed with NoReferencedTableError)."""
    script = "import infra.worker, kernel.db, sys; sys.stdout.write(' '.join(sorted(kernel.db.Base.metadata.tables)))"
    env = {"PATH": "/usr/bin:/bin", "PLACECAST_SECRET_KEY": "s" * 32, "PLACECAST_PG_PASSWORD": "p" * 32}
    env["PLACECAST_REDIS_PASSWORD"] = "r" * 32
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tables = set(result.stdout.split())
    assert {"organisations", "places", "geofences", "devices", "notifications", "audit_log"} <= tables, tables
