"""Serving the authority: the TLS context, and a background-thread server for tests that call it synchronously.

MSAL is blocking (requests), so a test that runs the authority on its own event loop and calls MSAL from that
same loop would deadlock; `AuthorityServer` runs the app on a private loop in a daemon thread instead.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from types import TracebackType
from typing import Any

from aiohttp import web

from local.authority.app import STATS_KEY, AuthorityState, create_app
from local.certs import LocalCerts, ensure_local_certs
from shared.config import LOCAL_TENANT_ID


def server_ssl_context(certs: LocalCerts) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert_pem, certs.server_key_pem)
    return context


class AuthorityServer:
    """`with AuthorityServer(token_lifetime=2) as authority: authority.url` -> `https://127.0.0.1:<port>`.

    Keyword arguments go to `create_app`; `port=0` picks a free port.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, certs: LocalCerts | None = None, **app_kwargs: Any):
        self.certs = certs or ensure_local_certs()
        self.host = host
        self.port = port
        self.app = create_app(certs=self.certs, **app_kwargs)
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(self.app, access_log=None)
        self._thread = threading.Thread(target=self._loop.run_forever, name="local-authority", daemon=True)

    @property
    def state(self) -> AuthorityState:
        return self.app[STATS_KEY]

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def authority_url(self, tenant: str = LOCAL_TENANT_ID) -> str:
        return f"{self.url}/{tenant}"

    def start(self) -> AuthorityServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=server_ssl_context(self.certs))
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> AuthorityServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
