"""Fixtures of the reliability and security suites (tests/security imports them): one local stack on free
ports per session, faults cleared after each case, and the session summary in the terminal report."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.stack import StackError
from tests.reliability.harness import (
    TALLY,
    ReliabilityStack,
    World,
    make_world,
    shared_stack,
    stop_shared_stack,
    write_summary,
)


@pytest.fixture(scope="session")
def suite_stack() -> Iterator[ReliabilityStack]:
    try:
        instance = shared_stack()
    except StackError as exc:
        pytest.fail(f"The local stack did not start: {exc}", pytrace=False)
    yield instance
    stop_shared_stack()


@pytest.fixture(scope="session")
def world(suite_stack: ReliabilityStack) -> World:
    return make_world(suite_stack)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_XFAILED] = hasattr(report, "wasxfail")
    return report


_XFAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def _per_case(request: pytest.FixtureRequest) -> Iterator[None]:
    before = TALLY.marks()
    yield
    if request.node.stash.get(_XFAILED, False):
        TALLY.move_to_known_bugs(before)  # a reported bug's losses are listed apart, not hidden
    # A failing case must not leave faults behind for the next one.
    if "world" in request.fixturenames:
        request.getfixturevalue("world").ctl.clear()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    write_summary(terminalreporter)
