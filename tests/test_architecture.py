"""The shape the house rules ask for: no import cycles, thin handlers that read no store, a short sync-a-set."""

import ast
import dataclasses
import inspect
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _modules() -> list[str]:
    names = []
    for pkg in ("shared", "functions"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_on_its_own() -> None:
    # One interpreter, but every module first in a clean slate of project modules: a cycle shows up as an
    # ImportError (partially initialised module) only when its own module is imported first.
    script = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m.split('.')[0] in ('shared', 'functions')]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""
    mods = _modules()
    assert len(mods) > 40
    r = subprocess.run([sys.executable, "-c", script, *mods], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def _handler_modules() -> list[pathlib.Path]:
    names = sorted((ROOT / "functions").glob("*.py"))
    return [f for f in names if f.name.startswith("http_") or f.name in ("sb_worker.py", "timer_schedule.py")]


def _store_fields() -> set[str]:
    """The engine's stores (its fields typed as a store port): couplings, errors, jobs, watermarks."""
    from shared.services.engine import Engine

    return {f.name for f in dataclasses.fields(Engine) if str(f.type).endswith("Store")}


def test_handlers_are_thin_and_read_no_store() -> None:
    stores = _store_fields()
    assert {"couplings", "errors", "jobs", "watermarks"} <= stores, stores
    modules = _handler_modules()
    assert len(modules) >= 10
    for f in modules:
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.startswith("shared.stores") for n in names), f"{f.name} imports {names}"
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):  # handlers and their helpers alike
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                assert length <= 25, f"{f.name}:{node.name} has {length} lines"
            if isinstance(node, ast.Attribute) and node.attr in stores:
                raise AssertionError(f"{f.name}:{node.lineno} reads the store .{node.attr} (a service's work)")


def test_the_handler_check_sees_a_store_read() -> None:
    stores = _store_fields()
    read = ast.parse("async def h(req):\n    return await runtime.engine.jobs.get(req.route_params['id'])\n")
    assert [n.attr for n in ast.walk(read) if isinstance(n, ast.Attribute) and n.attr in stores] == ["jobs"]


def test_the_sync_a_set_method_is_short() -> None:
    from shared.services.sync_service import SyncService

    lines = inspect.getsource(SyncService.sync_couplings).splitlines()
    assert len(lines) <= 50, len(lines)
