"""Fixtures: a real Azurite (tables) per test session on a free port, and the ``stores`` fixture parametrized
over the in-memory fakes and the Table Storage stores, so one behavioural suite proves both."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.config import Settings
from shared.stores import Stores, build_stores
from tests.fakes import FakeStores

ROOT = Path(__file__).resolve().parents[3]
AZURITE = ROOT / "node_modules" / ".bin" / "azurite-table"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def azurite_connection_string(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not AZURITE.exists():
        pytest.fail(f"Azurite is not installed at {AZURITE} (run `make setup`)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [
            str(AZURITE),
            "--tableHost", "127.0.0.1",
            "--tablePort", str(port),
            "--inMemoryPersistence", "--disableTelemetry", "--silent", "--skipApiVersionCheck", "--loose",
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"Azurite did not start: {err}")
            time.sleep(0.1)
    yield (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
        f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _table_settings(connection_string: str) -> Settings:
    return Settings(TABLES_CONNECTION_STRING=connection_string, SYNC_TABLE_PREFIX=f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def table_stores(azurite_connection_string: str) -> AsyncIterator[Stores]:
    """Table stores on fresh tables (a unique prefix per test)."""
    stores = build_stores(_table_settings(azurite_connection_string))
    yield stores
    await stores.close()


@pytest.fixture(params=["fake", "azurite"])
async def stores(request: pytest.FixtureRequest, azurite_connection_string: str) -> AsyncIterator[Stores | FakeStores]:
    if request.param == "fake":
        yield FakeStores()
        return
    real = build_stores(_table_settings(azurite_connection_string))
    yield real
    await real.close()
