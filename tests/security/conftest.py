"""Fixtures of the security suite: the same single local stack as tests/reliability (one per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.stack import StackError
from tests.reliability.harness import (
    ReliabilityStack,
    World,
    make_world,
    shared_stack,
    stop_shared_stack,
    write_summary,
)


@pytest.fixture(scope="session")
def sec_stack() -> Iterator[ReliabilityStack]:
    try:
        instance = shared_stack()
    except StackError as exc:
        pytest.fail(f"The local stack did not start: {exc}", pytrace=False)
    yield instance
    stop_shared_stack()


@pytest.fixture(scope="session")
def world(sec_stack: ReliabilityStack) -> World:
    return make_world(sec_stack)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    write_summary(terminalreporter)
