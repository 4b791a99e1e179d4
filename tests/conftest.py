"""Shared fixtures. `stack`: the whole local stack, started once per session; `api`: an HTTP session on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

from local.stack import Stack, StackError


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Anything that uses the stack is a `stack` test, marked or not (so `-m "not stack"` is reliable).
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The full local stack on the contract's ports, with `SYNC_SCHEDULED_SYNC=false`.

    `SYNC_TEST_STACK_PORTS=free` runs it on ephemeral ports instead (e.g. next to a running `make run`).
    """
    env = {"SYNC_SCHEDULED_SYNC": "false"}
    if os.environ.get("SYNC_TEST_STACK_PORTS") == "free":
        instance = Stack.on_free_ports(env=env)
    else:
        instance = Stack(env=env)
        busy = instance.busy_ports()
        if busy:
            pytest.fail(
                "The local stack's ports are taken: "
                + "; ".join(busy.values())
                + ". Stop `make run` (python -m local.stack run) before running the stack tests, "
                "or set SYNC_TEST_STACK_PORTS=free.",
                pytrace=False,
            )
    try:
        instance.start()
    except StackError as exc:
        pytest.fail(f"The local stack did not start: {exc}", pytrace=False)
    try:
        yield instance
    finally:
        instance.stop()


class ApiSession(requests.Session):
    """`requests.Session` bound to the host's base URL (`api.get("/api/health")`), with the function key."""

    def __init__(self, base_url: str, function_key: str) -> None:
        super().__init__()
        self.trust_env = False  # never route 127.0.0.1 through a proxy from the environment
        self.base_url = base_url.rstrip("/") + "/"
        self.function_key = function_key
        self.headers["x-functions-key"] = function_key

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return super().request(method, urljoin(self.base_url, str(url).lstrip("/")), *args, **kwargs)


@pytest.fixture
def api(stack: Stack) -> Iterator[ApiSession]:
    with ApiSession(stack.host_url, stack.function_key) as session:
        yield session
