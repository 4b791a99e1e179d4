"""Tokens that expire during a job (the authority issues 4-second tokens): the identity layer refreshes them
before they run out, on every audience (Table Storage, BC, Dataverse), and the job ends exact."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from local.stack import Stack, StackError
from tests.reliability.harness import ENV, TALLY, World, consistency, make_world, tag

pytestmark = [pytest.mark.stack, pytest.mark.slow]

LIFETIME = 4


@pytest.fixture
def short_token_world() -> Iterator[tuple[World, Stack]]:
    instance = Stack.on_free_ports(env=ENV, extra_args={"authority": ["--token-lifetime", str(LIFETIME)]})
    try:
        instance.start()
    except StackError as exc:
        pytest.fail(f"The local stack did not start: {exc}", pytrace=False)
    try:
        yield make_world(instance), instance
    finally:
        instance.stop()


def _issued(stack: Stack) -> int:
    http = requests.Session()
    http.trust_env = False
    stats = http.get(f"{stack.url('authority')}/_authority/stats", verify=str(stack.ca_file), timeout=10).json()
    return int(stats["tokensIssued"])


def test_tokens_expiring_mid_job_are_refreshed_and_nothing_is_lost(
    short_token_world: tuple[World, Stack],
) -> None:
    world, stack = short_token_world
    names = [f"T {tag()}" for _ in range(6)]
    for n in names[:3]:
        world.sims.bc_create("customers", displayName=n)
    for n in names[3:]:
        world.sims.dv_create("accounts", name=n)
    issued_before = _issued(stack)
    jobs = []
    for _ in range(3):  # three jobs spread over more than two token lifetimes
        resp = world.api.post("/api/mappings/CUSTOMER/jobs", json={"kind": "incremental"})
        assert resp.status_code == 202, resp.text
        jobs.append(world.api.wait_for_job(resp.json()["jobId"], timeout=90))
        time.sleep(LIFETIME)
    TALLY.cases += 1
    TALLY.jobs += len(jobs)
    summary = [(j["status"], j["counts"], j.get("detail")) for j in jobs]
    assert all(j["status"] == "succeeded" and j["counts"]["failed"] == 0 for j in jobs), summary
    assert sum(j["counts"]["inserted"] for j in jobs) == 6, jobs
    consistency(world, names=names)
    assert _issued(stack) - issued_before >= 3  # tokens really expired and were renewed during the run
