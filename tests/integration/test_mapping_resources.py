"""Contract part 2, "Mappings as resources", through the HTTP API on the local stack: every table-mapping
setting readable and patchable (ETag, 412, filters probed -> 422 invalid_filter, all or nothing), field
mappings checked against both sides' metadata, their effect on the next sync, user-defined mappings over
a custom BC API page and a custom Dataverse table syncing both ways, reset, delete as a job."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.test_api_contract import assert_problem

pytestmark = pytest.mark.stack

CUSTOM_API = "contoso/fieldService/v1.0"
SETTINGS = (
    "tableFilter",
    "integrationTableFilter",
    "conflictPolicy",
    "deletionPolicy",
    "createNew",
    "createNewIfNoMatch",
    "syncAfterCoupling",
    "scheduleMinutes",
    "userDefined",
    "etag",
)
FIELD_KEYS = {
    "id",
    "bc",
    "dataverse",
    "direction",
    "constant",
    "transform",
    "optionMap",
    "lookup",
    "status",
    "useForMatch",
    "matchPriority",
    "caseSensitive",
    "clearOnFail",
    "userDefined",
}


def uid(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:10]}"


@pytest.fixture
def customer(api: Any) -> Iterator[str]:
    """CUSTOMER, reset to the shipped definition after the test (the stack is shared by the session)."""
    yield "CUSTOMER"
    assert api.post("/api/mappings/CUSTOMER/reset").status_code == 200


def test_a_mapping_carries_every_setting_and_its_etag(api: Any) -> None:
    resp = api.get("/api/mappings/CUSTOMER")
    assert resp.status_code == 200
    body = resp.json()
    for key in SETTINGS:
        assert key in body, key
    assert resp.headers["ETag"] == body["etag"] and body["userDefined"] is False
    assert body["bcApi"] == "v2.0" and body["bcEntity"] == "customers"
    assert all(set(f) >= FIELD_KEYS for f in body["fields"])
    listed = {m["name"]: m for m in api.get("/api/mappings").json()["value"]}
    assert listed["CUSTOMER"]["etag"] == body["etag"]


def test_patch_every_setting_with_if_match_and_a_stale_etag(api: Any, customer: str) -> None:
    etag = api.get("/api/mappings/CUSTOMER").json()["etag"]
    change = {
        "conflictPolicy": "bcWins",
        "deletionPolicy": "none",
        "createNew": False,
        "createNewIfNoMatch": True,
        "syncAfterCoupling": True,
        "scheduleMinutes": 15,
        "tableFilter": "blocked eq ' '",
        "integrationTableFilter": "statecode eq 0 and customertypecode eq 3",
    }
    resp = api.patch("/api/mappings/CUSTOMER", json=change, headers={"If-Match": etag})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert {k: body[k] for k in change} == change
    assert body["etag"] != etag and resp.headers["ETag"] == body["etag"]
    # The old ETag is stale now: 412 and nothing changed.
    assert_problem(
        api.patch("/api/mappings/CUSTOMER", json={"scheduleMinutes": 30}, headers={"If-Match": etag}),
        412,
        "precondition_failed",
    )
    assert api.get("/api/mappings/CUSTOMER").json()["scheduleMinutes"] == 15
    # Reset: the shipped settings again, and a fresh ETag.
    reset = api.post("/api/mappings/CUSTOMER/reset").json()
    assert reset["conflictPolicy"] == "none" and reset["tableFilter"] is None and reset["scheduleMinutes"] == 5


def test_bad_settings_change_nothing(api: Any, customer: str) -> None:
    before = api.get("/api/mappings/CUSTOMER").json()
    for bad in (
        {"direction": "toDataverse", "conflictPolicy": "sometimes"},  # half valid: all or nothing
        {"name": "OTHER"},
        {"bcEntity": "vendors"},
        {"scheduleMinutes": 0},
        {"createNew": "yes"},
        {},
    ):
        assert_problem(api.patch("/api/mappings/CUSTOMER", json=bad), 400)
    # A filter the side's API refuses: one $top=1 probe, 422, nothing saved.
    body = assert_problem(
        api.patch("/api/mappings/CUSTOMER", json={"direction": "toDataverse", "tableFilter": "nosuchfield eq 1"}),
        422,
        "invalid_filter",
    )
    assert "Business Central" in body["detail"]
    assert_problem(
        api.patch("/api/mappings/CUSTOMER", json={"integrationTableFilter": "statecode eq 'x' and"}),
        422,
        "invalid_filter",
    )
    assert api.get("/api/mappings/CUSTOMER").json() == before


def test_field_mapping_errors_name_the_side_and_the_field(api: Any, customer: str) -> None:
    fields = api.get("/api/mappings/CUSTOMER/fields").json()["value"]
    assert {"displayName~name", "number~accountnumber"} <= {f["id"] for f in fields}
    before = api.get("/api/mappings/CUSTOMER").json()
    url = "/api/mappings/CUSTOMER/fields"
    body = assert_problem(api.post(url, json={"bc": "nickname", "dataverse": "description"}), 422, "unknown_field")
    assert "Business Central" in body["detail"] and "nickname" in body["detail"]
    body = assert_problem(api.post(url, json={"bc": "addressLine2", "dataverse": "address9"}), 422, "unknown_field")
    assert "Dataverse" in body["detail"] and "address9" in body["detail"]
    # balanceDue is read-only in BC: a direction that writes BC is refused; toDataverse is fine.
    body = assert_problem(
        api.post(url, json={"bc": "balanceDue", "dataverse": "revenue", "direction": "bidirectional"}),
        422,
        "read_only_field",
    )
    assert "balanceDue" in body["detail"]
    assert_problem(api.post(url, json={"bc": "taxLiable", "dataverse": "description"}), 422, "type_mismatch")
    # Dataverse's 2000 characters into BC's 20 needs a transform that cuts.
    assert_problem(
        api.post(url, json={"bc": "taxRegistrationNumber", "dataverse": "description"}), 422, "type_mismatch"
    )
    assert_problem(
        api.post(url, json={"bc": "state", "dataverse": "name", "direction": "toDataverse"}),
        409,
        "field_already_mapped",
    )
    assert_problem(api.delete(f"{url}/city~address1_city"), 409, "not_user_defined")
    assert_problem(api.patch(f"{url}/nope~nothing", json={"status": "disabled"}), 404, "field_not_found")
    assert_problem(api.patch(f"{url}/city~address1_city", json={"status": "off"}), 400)
    assert api.get("/api/mappings/CUSTOMER").json() == before


def test_added_field_arrives_and_disabled_field_is_left_alone(api: Any, world: dict[str, Any], customer: str) -> None:
    sims = world["sims"]
    added = api.post(
        "/api/mappings/CUSTOMER/fields",
        json={"bc": "taxRegistrationNumber", "dataverse": "description", "transform": {"trim": True, "maxLength": 20}},
    )
    assert added.status_code == 201, added.text
    field = added.json()
    assert field["id"] == "taxRegistrationNumber~description" and field["userDefined"] is True and field["cutsValues"]
    assert_problem(
        api.post("/api/mappings/CUSTOMER/fields", json={"bc": "taxRegistrationNumber", "dataverse": "description",
                                                        "transform": {"maxLength": 20}}),
        409,
        "field_already_mapped",
    )  # fmt: skip
    disabled = api.patch("/api/mappings/CUSTOMER/fields/city~address1_city", json={"status": "disabled"})
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"

    name = uid("Fields")
    b = sims.bc_create("customers", displayName=name, taxRegistrationNumber="Building 7", city="Aarhus")
    coupled = api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": b, "createNew": True})
    assert coupled.status_code == 201, coupled.text
    d = coupled.json()["dataverseId"]
    row = sims.dv_get("accounts", d)
    assert row["description"] == "Building 7" and row["address1_city"] is None  # disabled: not written

    sims.bc_patch("customers", b, taxRegistrationNumber="Building 9", city="Odense")
    sims.dv_patch("accounts", d, address1_city="Copenhagen")
    resp = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b], "direction": "toDataverse"})
    assert resp.status_code == 200 and resp.json()["results"][0]["status"] == "updated", resp.text
    row = sims.dv_get("accounts", d)
    assert row["description"] == "Building 9" and row["address1_city"] == "Copenhagen"
    # Deleting the user-defined field mapping: it is no longer synced.
    assert api.delete("/api/mappings/CUSTOMER/fields/taxRegistrationNumber~description").status_code == 204
    sims.bc_patch("customers", b, taxRegistrationNumber="Building 11")
    api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b], "direction": "toDataverse"})
    assert sims.dv_get("accounts", d)["description"] == "Building 9"


def _incremental(api: Any) -> dict[str, Any]:
    resp = api.post("/api/mappings/CUSTOMER/jobs", json={"kind": "incremental"})
    assert resp.status_code == 202, resp.text
    job = api.wait_for_job(resp.json()["jobId"], timeout=120)
    assert job["status"] in ("succeeded", "partial"), job  # earlier tests' records may fail in a whole suite
    return job


def test_a_field_added_after_the_dataverse_feed_began_arrives_and_is_not_emptied(
    api: Any, world: dict[str, Any], customer: str
) -> None:
    """Dataverse's delta link keeps the $select of the read that began the feed: a column mapped since is
    not in its rows. Read as empty, it was 'changed' and emptied the BC value (a lost update)."""
    sims = world["sims"]
    _incremental(api)  # the Dataverse feed's delta link, made without the column mapped next
    added = api.post(
        "/api/mappings/CUSTOMER/fields",
        json={"bc": "taxRegistrationNumber", "dataverse": "description", "transform": {"trim": True, "maxLength": 20}},
    )
    assert added.status_code == 201, added.text
    b = sims.bc_create("customers", displayName=uid("Feed"), taxRegistrationNumber="Building 7", phoneNumber="+1 1")
    coupled = api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": b, "createNew": True})
    assert coupled.status_code == 201, coupled.text
    d = coupled.json()["dataverseId"]
    assert sims.dv_get("accounts", d)["description"] == "Building 7"
    sims.dv_patch("accounts", d, telephone1="+1 9", description="Building 8")  # a person's edit of both
    _incremental(api)
    got = sims.bc_get("customers", b)
    assert (got["phoneNumber"], got["taxRegistrationNumber"]) == ("+1 9", "Building 8"), got


def _custom_url(sims: Any, rid: str | None = None) -> str:
    root = sims.bc_api.rsplit("/api/", 1)[0] + f"/api/{CUSTOM_API}"
    url = f"{root}/companies({sims.company})/serviceSites"
    return f"{url}({rid})" if rid else url


def test_metadata_endpoints_of_both_simulators(world: dict[str, Any]) -> None:
    sims = world["sims"]
    edmx = sims._bc("GET", f"{sims.bc_api}/$metadata")
    assert edmx.status_code == 200 and edmx.headers["Content-Type"].startswith("application/xml")
    assert '<EntitySet Name="customers" EntityType="Microsoft.NAV.customer" />' in edmx.text
    assert 'Name="balanceDue"' in edmx.text and "Org.OData.Core.V1.Computed" in edmx.text
    custom = sims._bc("GET", _custom_url(sims).split("/companies(")[0] + "/$metadata")
    assert '<EntitySet Name="serviceSites"' in custom.text and "customers" not in custom.text
    attrs = sims._dv("GET", f"{sims.dv_api}/EntityDefinitions(LogicalName='account')/Attributes").json()["value"]
    by_name = {a["LogicalName"]: a for a in attrs}
    for name in ("numberofemployees", "revenue", "creditlimit", "createdon", "customertypecode", "address1_line2"):
        assert name in by_name, name
    assert by_name["name"]["MaxLength"] == 160 and by_name["name"]["RequiredLevel"]["Value"] == "ApplicationRequired"
    assert by_name["createdon"]["IsValidForCreate"] is False and by_name["createdon"]["IsValidForUpdate"] is False
    assert by_name["customertypecode"]["AttributeType"] == "Picklist"
    missing = sims._dv("GET", f"{sims.dv_api}/EntityDefinitions(LogicalName='nosuchtable')/Attributes")
    assert missing.status_code == 404


def test_custom_mapping_over_a_custom_page_and_table_syncs_both_ways(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    name = "SITE " + uuid.uuid4().hex[:6].upper()
    body = {
        "name": name,
        "bcEntity": "serviceSites",
        "bcApi": CUSTOM_API,
        "dataverseTable": "cr7a1_servicesite",
        "dataverseEntitySet": "cr7a1_servicesites",
        "dataversePrimaryKey": "cr7a1_servicesiteid",
        "direction": "bidirectional",
        "syncOnlyCoupled": False,
        "fields": [
            {"bc": "displayName", "dataverse": "cr7a1_name"},
            {"bc": "number", "dataverse": "cr7a1_sitenumber", "direction": "toDataverse"},
            {"bc": "city", "dataverse": "cr7a1_city"},
            {"bc": "capacity", "dataverse": "cr7a1_capacity"},
        ],
    }
    resp = api.post("/api/mappings", json=body)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["userDefined"] and created["bcApi"] == CUSTOM_API and len(created["fields"]) == 4
    assert_problem(api.post("/api/mappings", json=body), 409, "mapping_exists")
    assert_problem(api.post("/api/mappings", json={**body, "name": "CUSTOMER"}), 409, "mapping_exists")
    assert_problem(api.post("/api/mappings", json={**body, "name": "X1", "bcEntity": "nosuch"}), 422, "unknown_entity")
    assert_problem(
        api.post("/api/mappings", json={**body, "name": "X2", "dataverseTable": "cr7a1_nosuch"}), 422, "unknown_entity"
    )
    assert_problem(api.post("/api/mappings", json={**body, "name": "lower case"}), 400)
    assert api.get("/api/mappings/X1").status_code == 404
    assert name in [m["name"] for m in api.get("/api/mappings").json()["value"]]
    try:
        # A field added to the custom mapping (not in its first definition) arrives on the next sync.
        added = api.post(f"/api/mappings/{name}/fields", json={"bc": "addressLine2", "dataverse": "cr7a1_addressline2"})
        assert added.status_code == 201, added.text
        r = sims._bc("POST", _custom_url(sims), json={"displayName": uid("Site"), "city": "Aarhus",
                                                      "addressLine2": "Gate 4", "capacity": 12})  # fmt: skip
        assert r.status_code == 201, r.text
        site = r.json()
        job = api.post(f"/api/mappings/{name}/jobs", json={"kind": "full"})
        assert job.status_code == 202, job.text
        done = api.wait_for_job(job.json()["jobId"])
        assert done["status"] == "succeeded" and done["counts"]["inserted"] >= 1, done
        coupling = api.get(f"/api/mappings/{name}/couplings/{site['id']}").json()
        row = sims._dv("GET", f"{sims.dv_api}/cr7a1_servicesites({coupling['dataverseId']})").json()
        assert (row["cr7a1_name"], row["cr7a1_city"], row["cr7a1_addressline2"], row["cr7a1_capacity"]) == (
            site["displayName"], "Aarhus", "Gate 4", 12,
        )  # fmt: skip
        assert row["cr7a1_sitenumber"] == site["number"]
        # Dataverse -> BC: a change of the row, and a new row creating a BC record.
        sims._dv("PATCH", f"{sims.dv_api}/cr7a1_servicesites({coupling['dataverseId']})", json={"cr7a1_city": "Vejle"},
                 headers={"If-Match": "*"})  # fmt: skip
        new = sims._dv("POST", f"{sims.dv_api}/cr7a1_servicesites", json={"cr7a1_name": uid("FromDv"),
                       "cr7a1_city": "Ribe"}, headers={"Prefer": "return=representation"}).json()  # fmt: skip
        done = api.wait_for_job(api.post(f"/api/mappings/{name}/jobs", json={"kind": "incremental"}).json()["jobId"])
        assert done["status"] == "succeeded", done
        assert sims._bc("GET", _custom_url(sims, site["id"])).json()["city"] == "Vejle"
        back = api.get(f"/api/mappings/{name}/couplings", params={"dataverseId": new["cr7a1_servicesiteid"]})
        bc_id = back.json()["value"][0]["bcId"]
        assert sims._bc("GET", _custom_url(sims, bc_id)).json()["city"] == "Ribe"
    finally:
        deleted = api.delete(f"/api/mappings/{name}")
        assert deleted.status_code == 202, deleted.text
        done = api.wait_for_job(deleted.json()["jobId"])
        assert done["kind"] == "deleteMapping" and done["counts"]["uncoupled"] >= 1, done
    assert_problem(api.get(f"/api/mappings/{name}"), 404, "mapping_not_found")
    assert_problem(api.delete("/api/mappings/CUSTOMER"), 409, "not_user_defined")


async def test_other_processes_see_a_change_within_five_seconds(api: Any, stack: Any, customer: str) -> None:
    """A second engine (another process's registry, same tables) picks the change up from its cache in <= 5 s."""
    import time

    from shared.bootstrap import build_runtime
    from shared.config import settings_from_env

    rt = build_runtime(settings_from_env(stack.child_env()))
    try:
        assert (await rt.engine.registry.get("CUSTOMER")).schedule_minutes == 5  # now cached in that process
        assert api.patch("/api/mappings/CUSTOMER", json={"scheduleMinutes": 42}).status_code == 200
        answered = time.monotonic()
        while (await rt.engine.registry.get("CUSTOMER")).schedule_minutes != 42:
            assert time.monotonic() - answered < 5.5, "not seen within 5 s"
            await asyncio.sleep(0.2)
    finally:
        await rt.aclose()


def test_filters_decide_what_scheduled_syncs_touch(api: Any, world: dict[str, Any], customer: str) -> None:
    """Records outside their side's filter are neither created on the other side nor synchronized."""
    sims = world["sims"]
    tag = uuid.uuid4().hex[:8]
    resp = api.patch(
        "/api/mappings/CUSTOMER",
        json={"tableFilter": f"city ne 'Skip{tag}'", "integrationTableFilter": f"address1_city ne 'Skip{tag}'"},
    )
    assert resp.status_code == 200, resp.text
    inside = sims.bc_create("customers", displayName=uid("In"), city="Aarhus")
    outside = sims.bc_create("customers", displayName=uid("Out"), city=f"Skip{tag}")
    dv_inside = sims.dv_create("accounts", name=uid("DvIn"), address1_city="Ribe")
    dv_outside = sims.dv_create("accounts", name=uid("DvOut"), address1_city=f"Skip{tag}")
    job = api.wait_for_job(api.post("/api/mappings/CUSTOMER/jobs", json={"kind": "incremental"}).json()["jobId"])
    assert job["status"] in ("succeeded", "partial"), job
    assert api.get(f"/api/mappings/CUSTOMER/couplings/{inside}").status_code == 200
    assert api.get(f"/api/mappings/CUSTOMER/couplings/{outside}").status_code == 404
    found = api.get("/api/mappings/CUSTOMER/couplings", params={"dataverseId": dv_inside}).json()["value"]
    assert len(found) == 1
    assert api.get("/api/mappings/CUSTOMER/couplings", params={"dataverseId": dv_outside}).json()["value"] == []
