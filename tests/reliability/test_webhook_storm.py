"""A storm of Dataverse webhook posts for one row: every post answered 202, one record on the other side.

Runs on its own stack: while the publisher bug below is open, a storm breaks the host's Service Bus
sender for the rest of its life, which would poison every later test of the shared stack (so: a fresh
stack per test, ~3 s)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.stack import StackError
from tests.reliability.harness import ENV, TALLY, ReliabilityStack, World, consistency, make_world, tag
from tests.reliability.test_concurrency import DV_WEBHOOK_KEY, context, coupling_of_dv, together, wait_until
from tests.reliability.test_fault_matrix import couple_new

pytestmark = [
    pytest.mark.stack,
    pytest.mark.slow,
]


@pytest.fixture
def storm_world() -> Iterator[World]:
    instance = ReliabilityStack.on_free_ports(env=ENV)
    instance.log_dir = instance.local_dir / f"reliability-logs-storm-{tag()}"
    try:
        instance.start()
    except StackError as exc:
        pytest.fail(f"The local stack did not start: {exc}", pytrace=False)
    try:
        yield make_world(instance)
    finally:
        instance.stop()


def test_dataverse_webhook_storm_for_one_new_row_creates_one_bc_record(storm_world: World) -> None:
    name = f"W {tag()}"
    d = storm_world.sims.dv_create("accounts", name=name)
    url = f"/api/webhooks/dataverse?code={DV_WEBHOOK_KEY}"
    answers = together(20, lambda i: storm_world.api.post(url, json=context(d, f"op-{i}-{tag()}"), timeout=30))
    TALLY.cases += 1
    assert [a.status_code for a in answers] == [202] * 20, [a.text for a in answers if a.status_code != 202][:2]
    wait_until(lambda: bool(coupling_of_dv(storm_world, d)), settle=3)
    consistency(storm_world, names=[name])


def test_dataverse_webhook_storm_for_a_changed_row_keeps_the_change(storm_world: World) -> None:
    b, d = couple_new(storm_world, f"W {tag()}")
    phone = f"+3 {tag()[:8]}"
    storm_world.sims.dv_patch("accounts", d, telephone1=phone)
    url = f"/api/webhooks/dataverse?code={DV_WEBHOOK_KEY}"
    answers = together(15, lambda i: storm_world.api.post(url, json=context(d, f"op-{i}-{tag()}"), timeout=30))
    TALLY.cases += 1
    assert {a.status_code for a in answers} == {202}
    wait_until(lambda: (storm_world.sims.bc_get("customers", b) or {}).get("phoneNumber") == phone)
    consistency(storm_world, names=[storm_world.sims.bc_get("customers", b)["displayName"]])
