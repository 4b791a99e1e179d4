"""Fixtures: the local authority (background thread, ephemeral port) and Azurite with --oauth basic over HTTPS."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local.authority import AuthorityServer
from local.certs import LocalCerts, ensure_local_certs
from shared.config import LOCAL_CLIENT_SECRET, PROJECT_ROOT, Settings

AZURITE = PROJECT_ROOT / "node_modules" / ".bin" / "azurite-table"


@pytest.fixture(scope="session")
def local_certs() -> LocalCerts:
    return ensure_local_certs()


@pytest.fixture
def start_authority(local_certs: LocalCerts) -> Iterator[Callable[..., AuthorityServer]]:
    """Start an authority with `create_app` keyword arguments (e.g. token_lifetime=2)."""
    servers: list[AuthorityServer] = []

    def start(**kwargs: Any) -> AuthorityServer:
        server = AuthorityServer(certs=local_certs, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def authority(start_authority: Callable[..., AuthorityServer]) -> AuthorityServer:
    return start_authority()


def make_settings(authority: AuthorityServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "authority_host": authority.url,
        "authority_ca": str(authority.certs.ca_pem),
        "client_secret": LOCAL_CLIENT_SECRET,  # the local authority's client; the service has no default secret
    }
    values.update(overrides)
    return Settings.model_validate(values)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="session")
def azurite(local_certs: LocalCerts) -> Iterator[str]:
    """Azurite tables over HTTPS with OAuth; yields the account endpoint `https://127.0.0.1:<port>/devstoreaccount1`."""
    if not AZURITE.exists():
        pytest.fail(f"Azurite missing at {AZURITE}: run npm ci")
    workdir = tempfile.mkdtemp(prefix="azurite-identity-")
    for _attempt in range(3):  # a free port can be taken between probing and binding by a parallel run
        port = _free_port()
        process = subprocess.Popen(
            [
                str(AZURITE),
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                str(port),
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--silent",
                "--oauth",
                "basic",
                "--cert",
                str(local_certs.server_cert_pem),
                "--key",
                str(local_certs.server_key_pem),
            ],
            cwd=workdir,  # in-memory persistence, but keep any stray files out of the repo
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if _wait_for_port(port, process):
            break
        process.kill()
        process.wait()
    else:
        pytest.fail("Azurite did not start")
    try:
        yield f"https://127.0.0.1:{port}/devstoreaccount1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)
