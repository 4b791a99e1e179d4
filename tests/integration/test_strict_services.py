"""The engine against the stricter simulators (#18), through the HTTP API on the local stack."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.integration.conftest import ApiClient

pytestmark = pytest.mark.stack


def _edit_in_the_second_of_our_write(api: ApiClient, sims: Any) -> tuple[str, str]:
    """A coupled pair whose Dataverse row holds a person's edit stamped in the same whole second as the
    engine's write just before it: (BC id, the person's value). Every attempt starts from our own write:
    the toDataverse sync is forced, because after a missed second the row holds the previous attempt's
    edit, a newer target value that an unforced one-way sync leaves alone (skipped). An unforced retry
    wrote nothing, so the 'same second' it found was the person's two edits, BC had changed too, and the
    pair was a conflict (the earlier whole-suite failures: the first attempt missed the second)."""
    b = sims.bc_create("customers", displayName=f"Second {uuid.uuid4().hex[:8]}", phoneNumber="+1 0")
    created = api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": b, "createNew": True})
    assert created.status_code == 201, created.text
    d = created.json()["dataverseId"]
    for attempt in range(8):
        ours, theirs = f"+1 {attempt}1", f"+1 {attempt}2"
        sims.bc_patch("customers", b, phoneNumber=ours)
        synced = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b], "direction": "toDataverse", "force": True})
        assert synced.status_code == 200, synced.text
        assert synced.json()["results"][0]["status"] == "updated", synced.json()  # our write, this attempt
        stamp = sims.dv_get("accounts", d)["modifiedon"]
        sims.dv_patch("accounts", d, telephone1=theirs)  # the person's edit
        if sims.dv_get("accounts", d)["modifiedon"] == stamp:
            assert stamp.endswith("Z") and "." not in stamp  # whole seconds, as the real service stamps
            return b, theirs
    pytest.fail("could not land two Dataverse writes in one second")


def test_a_person_editing_in_the_same_second_as_our_write_still_reaches_bc(
    api: ApiClient, world: dict[str, Any]
) -> None:
    """Dataverse stamps modifiedon in whole seconds: our write and a person's edit one moment later share a
    stamp. The echo skipping must not take the edit for our own write coming back."""
    sims = world["sims"]
    b, theirs = _edit_in_the_second_of_our_write(api, sims)
    # The direction prompt sees the edit as a Dataverse change although the stamp did not move...
    prompt = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b]})
    assert prompt.status_code == 400 and prompt.json()["code"] == "direction_required", prompt.text
    assert prompt.json()["changes"]["dataverse"] is True, prompt.json()
    assert prompt.json()["changes"]["businessCentral"] is False, prompt.json()
    # ...and merging takes it to BC (the value check tells it from our own write coming back).
    merged = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b], "direction": "bidirectional"})
    assert merged.status_code == 200, merged.text
    assert sims.bc_get("customers", b)["phoneNumber"] == theirs, ("the person's edit did not reach BC", merged.json())


def test_an_incremental_job_takes_an_edit_in_the_second_of_our_write_to_bc(
    api: ApiClient, world: dict[str, Any]
) -> None:
    """The change feed's path: the row comes back with the stamp of our write (the equal stamp is a
    candidate) and values that differ from what we wrote (not our echo), so the job takes it to BC."""
    sims = world["sims"]
    b, theirs = _edit_in_the_second_of_our_write(api, sims)
    resp = api.post("/api/mappings/CUSTOMER/jobs", json={"kind": "incremental"})
    assert resp.status_code == 202, resp.text
    job = api.wait_for_job(resp.json()["jobId"], timeout=120)
    assert job["status"] in ("succeeded", "partial"), job  # earlier tests' records may fail in a whole suite
    errors = [e for e in api.all_pages("/api/errors", mapping="CUSTOMER") if e.get("bcId") == b]
    assert sims.bc_get("customers", b)["phoneNumber"] == theirs, ("the person's edit did not reach BC", job, errors)
