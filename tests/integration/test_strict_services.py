"""The engine against the stricter simulators (#18), through the HTTP API on the local stack."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.integration.conftest import ApiClient

pytestmark = pytest.mark.stack


def test_a_person_editing_in_the_same_second_as_our_write_still_reaches_bc(
    api: ApiClient, world: dict[str, Any]
) -> None:
    """Dataverse stamps modifiedon in whole seconds: our write and a person's edit one moment later share a
    stamp. The echo skipping must not take the edit for our own write coming back."""
    sims = world["sims"]
    b = sims.bc_create("customers", displayName=f"Second {uuid.uuid4().hex[:8]}", phoneNumber="+1 0")
    created = api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": b, "createNew": True})
    assert created.status_code == 201, created.text
    d = created.json()["dataverseId"]
    for attempt in range(8):
        ours, theirs = f"+1 {attempt}1", f"+1 {attempt}2"
        sims.bc_patch("customers", b, phoneNumber=ours)
        synced = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b], "direction": "toDataverse"})
        assert synced.status_code == 200, synced.text
        stamp = sims.dv_get("accounts", d)["modifiedon"]
        sims.dv_patch("accounts", d, telephone1=theirs)  # the person's edit
        if sims.dv_get("accounts", d)["modifiedon"] == stamp:
            break  # same second: the case under test
    else:
        pytest.fail("could not land two Dataverse writes in one second")
    assert stamp.endswith("Z") and "." not in stamp  # whole seconds, as the real service stamps
    # The direction prompt sees the edit as a Dataverse change although the stamp did not move...
    prompt = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b]})
    assert prompt.status_code == 400 and prompt.json()["code"] == "direction_required", prompt.text
    assert prompt.json()["changes"]["dataverse"] is True, prompt.json()
    assert prompt.json()["changes"]["businessCentral"] is False, prompt.json()
    # ...and merging takes it to BC (the value check tells it from our own write coming back).
    merged = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b], "direction": "bidirectional"})
    assert merged.status_code == 200, merged.text
    assert sims.bc_get("customers", b)["phoneNumber"] == theirs, ("the person's edit did not reach BC", merged.json())
