"""`python -m local.tables_proxy --port 10002 --jwks-url URL --app-id MI -- <azurite-table argv without host/port>`:
start Azurite on a private port, then serve the checking proxy over HTTPS on `--port`."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import signal
import socket
import ssl
import subprocess
import sys
import time

from aiohttp import web

from local.authority.server import server_ssl_context
from local.certs import ensure_local_certs
from local.simcore import DEFAULT_JWKS_URL, TokenValidator
from local.tables_proxy.app import create_proxy_app
from shared.config import LOCAL_DIR, STORAGE_AUDIENCE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_for(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"azurite exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.1)
    raise SystemExit("azurite did not start")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m local.tables_proxy", description=__doc__)
    parser.add_argument("--port", type=int, default=10002)
    parser.add_argument("--jwks-url", default=DEFAULT_JWKS_URL)
    parser.add_argument("--ca-file", default=str(LOCAL_DIR / "ca.pem"))
    parser.add_argument("--app-id", action="append", default=None, help="app ids accepted (the managed identity)")
    parser.add_argument("azurite", nargs=argparse.REMAINDER, help="-- azurite-table and its arguments")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s tables_proxy %(levelname)s %(message)s")
    azurite = [a for a in args.azurite if a != "--"]
    if not azurite:
        parser.error("give the Azurite command after --")
    certs = ensure_local_certs()
    backend_port = _free_port()
    process = subprocess.Popen(
        [*azurite, "--tableHost", "127.0.0.1", "--tablePort", str(backend_port)],
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,  # only the parent-death signal
    )
    try:
        _wait_for(backend_port, process)
        auth = TokenValidator(
            audience=STORAGE_AUDIENCE,
            jwks_url=args.jwks_url,
            ca_file=args.ca_file,
            app_ids=frozenset(args.app_id) if args.app_id else None,
        )
        backend_ssl = ssl.create_default_context(cafile=str(certs.ca_pem))
        app = create_proxy_app(backend=f"https://127.0.0.1:{backend_port}", auth=auth, backend_ssl=backend_ssl)
        web.run_app(
            app,
            host="127.0.0.1",
            port=args.port,
            ssl_context=server_ssl_context(certs),
            access_log=None,
            print=lambda _: logging.info("listening on https://127.0.0.1:%d -> azurite :%d", args.port, backend_port),
        )
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        if process.poll() is None:
            process.kill()
    sys.exit(0)


if __name__ == "__main__":
    main()
