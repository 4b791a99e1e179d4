"""Contract part 2, "Match-based coupling, as BC does it", through the HTTP API on the local stack.

Each test uses fresh, unique values so it only ever matches its own records."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from tests.integration.test_api_contract import assert_problem
from tests.integration.test_mapping_resources import customer, uid  # noqa: F401 -- customer is a fixture

pytestmark = pytest.mark.stack


def match(api: Any, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post("/api/mappings/CUSTOMER/couplings/match", json=body)
    assert resp.status_code == 202, resp.text
    job = api.wait_for_job(resp.json()["jobId"])
    assert job["kind"] == "matchCouple"
    return job


def coupled_to(api: Any, bc_id: str) -> str | None:
    resp = api.get(f"/api/mappings/CUSTOMER/couplings/{bc_id}")
    return resp.json()["dataverseId"] if resp.status_code == 200 else None


def dv_requests(stack: Any, route: str = "accounts") -> int:
    stats = requests.get(f"{stack.url('dv_sim')}/_sim/stats", timeout=10).json()
    return int(stats["byRoute"].get(route, 0))


NAME_CITY = [
    {"bc": "displayName", "dataverse": "name", "priority": 1},
    {"bc": "city", "dataverse": "address1_city", "priority": 1},
]


def test_two_fields_of_one_priority_match_together(api: Any, world: dict[str, Any], stack: Any) -> None:
    sims = world["sims"]
    name = uid("Pair")
    b = sims.bc_create("customers", displayName=name, city="Aarhus")
    d1 = sims.dv_create("accounts", name=name, address1_city="Aarhus")
    sims.dv_create("accounts", name=name, address1_city="Odense")
    sims.dv_create("accounts", name=uid("Other"), address1_city="Aarhus")
    before = dv_requests(stack)
    job = match(api, {"bcIds": [b], "matchFields": NAME_CITY})
    assert job["status"] == "succeeded" and job["counts"]["coupled"] == 1, job
    assert coupled_to(api, b) == d1
    assert dv_requests(stack) - before == 1  # one Dataverse query for the chunk and its one priority
    # Matching again: the record is coupled already and counts unchanged.
    again = match(api, {"bcIds": [b], "matchFields": NAME_CITY})
    assert again["counts"]["unchanged"] == 1 and again["counts"]["coupled"] == 0


def test_case_difference_matches_unless_case_sensitive(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    name = uid("Case")
    b1 = sims.bc_create("customers", displayName=name)
    d1 = sims.dv_create("accounts", name=name.upper())
    job = match(api, {"bcIds": [b1], "matchFields": [{"bc": "displayName", "dataverse": "name", "priority": 1}]})
    assert job["counts"]["coupled"] == 1 and coupled_to(api, b1) == d1

    name2 = uid("Strict")
    b2 = sims.bc_create("customers", displayName=name2)
    sims.dv_create("accounts", name=name2.upper())
    strict = [{"bc": "displayName", "dataverse": "name", "priority": 1, "caseSensitive": True}]
    job = match(api, {"bcIds": [b2], "matchFields": strict})
    assert job["status"] == "partial" and job["counts"]["failed"] == 1 and coupled_to(api, b2) is None
    errors = api.get("/api/errors", params={"mapping": "CUSTOMER"}).json()["value"]
    mine = [e for e in errors if e["bcId"] == b2]
    assert mine and mine[0]["code"] == "no_unique_match" and "priority 1" in mine[0]["message"]


def test_ambiguous_first_priority_is_resolved_by_the_second(api: Any, world: dict[str, Any], stack: Any) -> None:
    sims = world["sims"]
    name, phone = uid("Twin"), "+45 " + uuid.uuid4().hex[:8]
    b = sims.bc_create("customers", displayName=name, phoneNumber=phone)
    sims.dv_create("accounts", name=name, telephone1="+45 0")
    d2 = sims.dv_create("accounts", name=name, telephone1=phone)
    fields = [
        {"bc": "displayName", "dataverse": "name", "priority": 1},
        {"bc": "phoneNumber", "dataverse": "telephone1", "priority": 2},
    ]
    before = dv_requests(stack)
    job = match(api, {"bcIds": [b], "matchFields": fields})
    assert job["counts"]["coupled"] == 1 and coupled_to(api, b) == d2
    assert dv_requests(stack) - before == 2  # one query per priority for the chunk


@pytest.mark.usefixtures("customer")
def test_field_mappings_with_use_for_match_are_the_criteria(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    shipped = {f["id"]: f for f in api.get("/api/mappings/CUSTOMER/fields").json()["value"]}
    assert (shipped["number~accountnumber"]["useForMatch"], shipped["number~accountnumber"]["matchPriority"]) == (
        True,
        1,
    )  # the shipped criteria are flags of the field mappings, changeable like any other
    resp = api.patch("/api/mappings/CUSTOMER/fields/number~accountnumber", json={"useForMatch": False})
    assert resp.status_code == 200 and resp.json()["useForMatch"] is False
    for fid, prio in (("displayName~name", 1), ("city~address1_city", 1)):
        resp = api.patch(f"/api/mappings/CUSTOMER/fields/{fid}", json={"useForMatch": True, "matchPriority": prio})
        assert resp.status_code == 200 and resp.json()["useForMatch"] is True, resp.text
    name = uid("Crit")
    b = sims.bc_create("customers", displayName=name, city="Vejle")
    sims.dv_create("accounts", name=name, address1_city="Ribe")
    d = sims.dv_create("accounts", name=name, address1_city="Vejle")
    job = match(api, {"bcIds": [b]})
    assert job["counts"]["coupled"] == 1 and coupled_to(api, b) == d


def test_create_new_if_no_match(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    b = sims.bc_create("customers", displayName=uid("Lonely"), phoneNumber="+45 77")
    job = match(
        api,
        {"bcIds": [b], "matchFields": [{"bc": "displayName", "dataverse": "name"}], "createNewIfNoMatch": True},
    )
    assert job["status"] == "succeeded" and (job["counts"]["inserted"], job["counts"]["coupled"]) == (1, 1), job
    d = coupled_to(api, b)
    assert d is not None and sims.dv_get("accounts", d)["telephone1"] == "+45 77"


@pytest.mark.usefixtures("customer")
@pytest.mark.parametrize(
    ("policy", "expected"),
    [("bcWins", "bc"), ("dataverseWins", "dv"), ("none", "dv")],
)
def test_sync_after_follows_the_conflict_policy(api: Any, world: dict[str, Any], policy: str, expected: str) -> None:
    """bcWins -> toDataverse; dataverseWins -> fromDataverse; none -> merge (a never-synced pair: the newer
    record wins, here the Dataverse row, created after the BC record)."""
    sims = world["sims"]
    assert api.patch("/api/mappings/CUSTOMER", json={"conflictPolicy": policy}).status_code == 200
    name = uid("After")
    b = sims.bc_create("customers", displayName=name, phoneNumber="+1 111", website="bc.example")
    d = sims.dv_create("accounts", name=name, telephone1="+1 222", websiteurl="dv.example")
    job = match(api, {"bcIds": [b], "matchFields": [{"bc": "displayName", "dataverse": "name"}], "syncAfter": True})
    assert job["counts"]["coupled"] == 1 and job["counts"]["modified"] == 1, job
    phones = (sims.bc_get("customers", b)["phoneNumber"], sims.dv_get("accounts", d)["telephone1"])
    assert phones == (("+1 111", "+1 111") if expected == "bc" else ("+1 222", "+1 222"))


def test_match_bad_input_changes_nothing(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    b = sims.bc_create("customers", displayName=uid("Bad"))
    url = "/api/mappings/CUSTOMER/couplings/match"
    assert_problem(api.post(url, json={"bcIds": [b], "syncAfter": "yes"}), 400)
    assert_problem(api.post(url, json={"bcIds": [b], "matchFields": []}), 400)
    assert_problem(api.post(url, json={"bcIds": ["not-a-guid"]}), 400)
    assert_problem(api.post(url, json={"bcIds": [b], "matchFields": [{"bc": "nickname", "dataverse": "name"}]}),
                   422, "unknown_field")  # fmt: skip
    assert_problem(api.post(url, json={"bcIds": [b], "matchFields": [{"bc": "city", "dataverse": "nosuch"}]}),
                   422, "unknown_field")  # fmt: skip
    assert_problem(api.post("/api/mappings/NOPE/couplings/match", json={}), 404, "mapping_not_found")
    assert coupled_to(api, b) is None
