"""Fixtures of the security suite: the same ones, and the same single local stack, as tests/reliability."""

from tests.reliability.conftest import (  # noqa: F401 -- fixtures and hooks, registered by being here
    _per_case,
    pytest_runtest_makereport,
    pytest_terminal_summary,
    suite_stack,
    world,
)
