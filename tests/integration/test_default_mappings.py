"""Contract part 2, "The shipped mapping set": BC's default mappings through the HTTP API on the local stack.

Every test uses fresh codes and names, so it only ever meets its own records in the shared stack."""

from __future__ import annotations

import random
import string
import uuid
from typing import Any
from urllib.parse import quote

import pytest
import requests

pytestmark = pytest.mark.stack

LOCAL_CURRENCY_ID = "6f1c2d3e-4a5b-4c6d-8e7f-a0b1c2d3e4f5"  # the Dataverse simulator's base currency (USD)


def code(prefix: str, n: int = 4) -> str:
    return prefix + "".join(random.choices(string.ascii_uppercase, k=n))


def m(name: str) -> str:
    return quote(name, safe="")


def run_job(api: Any, mapping: str, body: dict[str, Any], path: str = "jobs") -> dict[str, Any]:
    resp = api.post(f"/api/mappings/{m(mapping)}/{path}", json=body)
    assert resp.status_code == 202, resp.text
    return api.wait_for_job(resp.json()["jobId"])


def coupled_to(api: Any, mapping: str, bc_id: str) -> str | None:
    resp = api.get(f"/api/mappings/{m(mapping)}/couplings/{bc_id}")
    return resp.json()["dataverseId"] if resp.status_code == 200 else None


def couple_new(api: Any, mapping: str, bc_id: str) -> str:
    resp = api.post(f"/api/mappings/{m(mapping)}/couplings", json={"bcId": bc_id, "createNew": True})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["dataverseId"])


def dv_seed(stack: Any, entity: str, fields: dict[str, Any]) -> str:
    resp = requests.post(
        f"{stack.url('dv_sim')}/_sim/seed",
        json={"entity": entity, "count": 1, "prefix": "T", "fields": fields},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["ids"][0])


def count(world: dict[str, Any], entity_set: str, pk: str, filter_: str) -> int:
    sims = world["sims"]
    r = sims._dv("GET", f"{sims.dv_api}/{entity_set}", params={"$filter": filter_, "$select": pk})
    assert r.status_code == 200, r.text
    return len(r.json()["value"])


def options(world: dict[str, Any], attribute: str) -> dict[int, str]:
    sims = world["sims"]
    r = sims._dv(
        "GET",
        f"{sims.dv_api}/EntityDefinitions(LogicalName='account')/Attributes(LogicalName='{attribute}')"
        "/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$expand=OptionSet",
    )
    assert r.status_code == 200, r.text
    return {o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"] for o in r.json()["OptionSet"]["Options"]}


def new_currency(api: Any, world: dict[str, Any]) -> tuple[str, str, str]:
    """A BC currency coupled with a Dataverse currency created for it: (code, BC id, Dataverse id)."""
    iso = code("Q", 3)
    bc_id = world["sims"].bc_create("currencies", code=iso, displayName=f"Test {iso}", symbol="¤")
    job = run_job(api, "CURRENCY", {"bcIds": [bc_id]}, "couplings/match")
    assert job["status"] == "succeeded", job
    dv_id = coupled_to(api, "CURRENCY", bc_id)
    assert dv_id is not None
    return iso, bc_id, dv_id


def test_currency_couples_by_iso_code_and_creates_the_missing_one(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    known, missing = code("K", 3), code("N", 3)
    existing = sims.dv_create(
        "transactioncurrencies",
        isocurrencycode=known,
        currencyname="Known",
        currencysymbol="k",
        exchangerate=1.1,
        currencyprecision=2,
    )
    b_known = sims.bc_create("currencies", code=known, displayName="Known currency", symbol="K$")
    b_missing = sims.bc_create("currencies", code=missing, displayName="New currency", symbol="N$")
    job = run_job(api, "CURRENCY", {"bcIds": [b_known, b_missing]}, "couplings/match")
    assert job["status"] == "succeeded" and job["counts"]["coupled"] == 2 and job["counts"]["inserted"] == 1, job
    assert coupled_to(api, "CURRENCY", b_known) == existing
    created = sims.dv_get("transactioncurrencies", coupled_to(api, "CURRENCY", b_missing))
    assert (created["isocurrencycode"], created["currencyname"], created["currencysymbol"]) == (
        missing,
        "New currency",
        "N$",
    )
    # An update flows to Dataverse (toDataverse, coupled only).
    sims.bc_patch("currencies", b_known, displayName="Known, renamed")
    resp = api.post("/api/mappings/CURRENCY/sync", json={"bcIds": [b_known], "force": True})
    assert resp.status_code == 200 and resp.json()["results"][0]["status"] == "updated", resp.text
    assert sims.dv_get("transactioncurrencies", existing)["currencyname"] == "Known, renamed"
    # Matching again couples nothing new.
    again = run_job(api, "CURRENCY", {"bcIds": [b_known, b_missing]}, "couplings/match")
    assert again["counts"]["unchanged"] == 2 and again["counts"]["inserted"] == 0, again


def test_payment_terms_and_shipment_methods_couple_with_option_values(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    new_code = code("PT")
    b_new = sims.bc_create("paymentTerms", code=new_code, displayName="Test terms", dueDateCalculation="30D")
    before = options(world, "paymenttermscode")
    job = run_job(api, "PAYMENT TERMS", {"kind": "full"})
    assert job["status"] == "succeeded", job
    value = int(coupled_to(api, "PAYMENT TERMS", b_new))
    after = options(world, "paymenttermscode")
    assert value not in before and after[value] == new_code and value >= 100_000_000  # added by InsertOptionValue
    # A code whose label exists couples with that option (BC's match), nothing added.
    sims_label = code("SM")
    r = sims._dv(
        "POST",
        f"{sims.dv_api}/InsertOptionValue",
        json={
            "EntityLogicalName": "account",
            "AttributeLogicalName": "address1_freighttermscode",
            "Label": {"LocalizedLabels": [{"Label": sims_label.lower(), "LanguageCode": 1033}]},
        },
    )
    assert r.status_code == 200, r.text
    existing_value = r.json()["NewOptionValue"]
    b_ship = sims.bc_create("shipmentMethods", code=sims_label, displayName="Test shipment")
    job = run_job(api, "SHIPMENT METHOD", {"bcIds": [b_ship]}, "couplings/match")
    assert job["status"] == "succeeded", job
    assert coupled_to(api, "SHIPMENT METHOD", b_ship) == str(existing_value)
    assert len(options(world, "address1_freighttermscode")) == len({**options(world, "address1_freighttermscode")})
    # Running again changes nothing.
    again = run_job(api, "PAYMENT TERMS", {"kind": "incremental"})
    assert again["counts"]["inserted"] == 0 and options(world, "paymenttermscode") == after, again


def test_customer_lookups_resolve_currency_owner_terms_and_shipment(
    api: Any, world: dict[str, Any], stack: Any
) -> None:
    sims = world["sims"]
    iso, _, dv_currency = new_currency(api, world)
    email = f"sp.{uuid.uuid4().hex[:8]}@contoso.example"
    user = dv_seed(stack, "systemusers", {"internalemailaddress": email, "fullname": "Sales Person"})
    sp_code = code("S", 5)
    sp = sims.bc_create("salespeoplePurchasers", code=sp_code, email=email)
    resp = api.post("/api/mappings/SALESPEOPLE/couplings", json={"bcId": sp, "dataverseId": user})
    assert resp.status_code == 201, resp.text
    assert sims.bc_get("salespeoplePurchasers", sp)["displayName"] == "Sales Person"  # fromDataverse after coupling
    terms = sims.bc_create("paymentTerms", code=code("PT"), displayName="Terms")
    ship = sims.bc_create("shipmentMethods", code=code("SH"), displayName="Ship")
    assert run_job(api, "PAYMENT TERMS", {"bcIds": [terms]}, "couplings/match")["status"] == "succeeded"
    assert run_job(api, "SHIPMENT METHOD", {"bcIds": [ship]}, "couplings/match")["status"] == "succeeded"
    cust = sims.bc_create(
        "customers",
        displayName=f"Lookup customer {iso}",
        addressLine2="Building 2",
        state="WA",
        creditLimit=5000,
        currencyCode=iso,
        salespersonCode=sp_code,
        paymentTermsId=terms,
        shipmentMethodId=ship,
    )
    account = sims.dv_get("accounts", couple_new(api, "CUSTOMER", cust))
    assert account["_transactioncurrencyid_value"] == dv_currency
    assert account["_ownerid_value"] == user
    assert account["paymenttermscode"] == int(coupled_to(api, "PAYMENT TERMS", terms))
    assert account["address1_freighttermscode"] == int(coupled_to(api, "SHIPMENT METHOD", ship))
    assert (account["customertypecode"], account["address1_line2"], account["address1_stateorprovince"]) == (
        3,
        "Building 2",
        "WA",
    )
    assert account["creditlimit"] == 5000
    # BC's blank currency is the company's local currency, not an empty lookup.
    plain = sims.bc_create("customers", displayName="Local currency customer")
    assert (
        sims.dv_get("accounts", couple_new(api, "CUSTOMER", plain))["_transactioncurrencyid_value"] == LOCAL_CURRENCY_ID
    )
    # Dataverse -> BC: another coupled option comes back as its BC id; the local currency as blank.
    other = sims.bc_create("paymentTerms", code=code("PT"), displayName="Other terms")
    assert run_job(api, "PAYMENT TERMS", {"bcIds": [other]}, "couplings/match")["status"] == "succeeded"
    d = coupled_to(api, "CUSTOMER", cust)
    sims.dv_patch(
        "accounts",
        d,
        paymenttermscode=int(coupled_to(api, "PAYMENT TERMS", other)),
        **{"transactioncurrencyid@odata.bind": f"/transactioncurrencies({LOCAL_CURRENCY_ID})"},
    )
    resp = api.post("/api/mappings/CUSTOMER/sync", json={"dataverseIds": [d], "direction": "fromDataverse"})
    assert resp.status_code == 200 and resp.json()["results"][0]["status"] == "updated", resp.text
    back = sims.bc_get("customers", cust)
    assert back["paymentTermsId"] == other and back["currencyCode"] == ""


def test_a_salesperson_code_without_a_coupled_user_fails_the_record_until_coupled(
    api: Any, world: dict[str, Any], stack: Any
) -> None:
    sims = world["sims"]
    sp_code = code("U", 5)
    email = f"late.{uuid.uuid4().hex[:8]}@contoso.example"
    sp = sims.bc_create("salespeoplePurchasers", code=sp_code, displayName="Late", email=email)
    cust = sims.bc_create("customers", displayName="Owned later")
    d = couple_new(api, "CUSTOMER", cust)
    sims.bc_patch("customers", cust, salespersonCode=sp_code)
    resp = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [cust], "direction": "toDataverse"})
    result = resp.json()["results"][0]
    assert result["status"] == "failed" and result["error"]["code"] == "parent_not_coupled", resp.text
    user = dv_seed(stack, "systemusers", {"internalemailaddress": email, "fullname": "Late User"})
    resp = api.post("/api/mappings/SALESPEOPLE/couplings", json={"bcId": sp, "dataverseId": user})
    assert resp.status_code == 201, resp.text
    errors = [e for e in api.all_pages("/api/errors", mapping="CUSTOMER") if e.get("bcId") == cust]
    assert errors, "the failure is listed"
    job = api.wait_for_job(api.post("/api/errors/retry", json={"ids": [errors[0]["id"]]}).json()["jobId"])
    assert job["status"] == "succeeded", job
    assert sims.dv_get("accounts", d)["_ownerid_value"] == user


def test_vendor_accounts_carry_type_11_and_customer_never_takes_them(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    vendor = sims.bc_create("vendors", displayName=f"Vendor {uuid.uuid4().hex[:6]}", city="Oslo", addressLine2="B")
    account = sims.dv_get("accounts", couple_new(api, "VENDOR", vendor))
    assert (account["customertypecode"], account["address1_city"], account["address1_line2"]) == (11, "Oslo", "B")
    assert account["_transactioncurrencyid_value"] == LOCAL_CURRENCY_ID
    # Both ways: a change in Dataverse comes back to the vendor.
    sims.dv_patch("accounts", account["accountid"], telephone1="+47 1234")
    resp = api.post(
        "/api/mappings/VENDOR/sync", json={"dataverseIds": [account["accountid"]], "direction": "fromDataverse"}
    )
    assert resp.status_code == 200 and resp.json()["results"][0]["status"] == "updated", resp.text
    assert sims.bc_get("vendors", vendor)["phoneNumber"] == "+47 1234"
    # A vendor account is outside CUSTOMER's integration table filter: CUSTOMER's jobs (which create BC
    # customers from new accounts) never take it.
    assert run_job(api, "CUSTOMER", {"kind": "incremental"})["status"] in ("succeeded", "partial")
    resp = api.get("/api/mappings/CUSTOMER/couplings", params={"dataverseId": account["accountid"]})
    assert resp.json()["value"] == [], resp.text
    # ... and "Synchronize from Dataverse" on it works in VENDOR, not CUSTOMER.
    resp = api.post("/api/dataverse/sync", json={"entityName": "account", "id": account["accountid"]})
    assert resp.status_code == 200 and resp.json()["mapping"] == "VENDOR", resp.text


def test_items_create_products_with_unit_group_default_unit_and_decimals(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    unit = code("U", 5)
    u = sims.bc_create("unitsOfMeasure", code=unit, displayName="Test unit")
    item = sims.bc_create("items", displayName="Unit item", baseUnitOfMeasureCode=unit, unitPrice=3, unitCost=2)
    # The unit is not coupled yet: the item is not created, it fails with the retryable parent_not_coupled.
    resp = api.post("/api/mappings/ITEM-PRODUCT/couplings", json={"bcId": item, "createNew": True})
    assert resp.status_code >= 400 and coupled_to(api, "ITEM-PRODUCT", item) is None, resp.text
    errors = [e for e in api.all_pages("/api/errors", mapping="ITEM-PRODUCT") if e.get("bcId") == item]
    assert [e["code"] for e in errors] == ["parent_not_coupled"], errors
    job = run_job(api, "UNIT OF MEASURE", {"bcIds": [u]}, "couplings/match")
    assert job["status"] == "succeeded" and job["counts"]["inserted"] == 1, job
    group = sims.dv_get("uomschedules", coupled_to(api, "UNIT OF MEASURE", u))
    assert (group["name"], group["baseuomname"]) == (unit, unit)
    # Retrying the failure after the parent synced heals it: the product is created with its units.
    job = api.wait_for_job(api.post("/api/errors/retry", json={"ids": [errors[0]["id"]]}).json()["jobId"])
    assert job["status"] == "succeeded" and job["counts"]["inserted"] == 1, job
    product = sims.dv_get("products", coupled_to(api, "ITEM-PRODUCT", item))
    assert product["_defaultuomscheduleid_value"] == group["uomscheduleid"]
    base = sims.dv_get("uoms", product["_defaultuomid_value"])
    assert base["name"] == unit and base["_uomscheduleid_value"] == group["uomscheduleid"]
    assert (product["quantitydecimal"], product["statecode"], product["standardcost"]) == (2, 0, 2)


def test_the_strict_dataverse_refuses_a_product_without_units(world: dict[str, Any]) -> None:
    sims = world["sims"]
    r = sims._dv("POST", f"{sims.dv_api}/products", json={"name": "No units", "productnumber": code("P", 6)})
    assert (r.status_code == 400 and "quantitydecimal" in r.text) or "uom" in r.text, r.text


def test_opportunities_sync_both_ways_linked_to_the_contact(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    company = sims.bc_create("customers", displayName=f"Opp company {uuid.uuid4().hex[:6]}")
    couple_new(api, "CUSTOMER", company)
    company_contact = sims.bc_create("contacts", type="Company", displayName="Opp company contact")
    number = sims.bc_get("contacts", company_contact)["number"]
    person = sims.bc_create("contacts", type="Person", displayName="Opp person", companyNumber=number)
    contact_dv = None
    resp = api.post("/api/mappings/CONTACT/couplings", json={"bcId": person, "createNew": True})
    if resp.status_code == 201:
        contact_dv = resp.json()["dataverseId"]
    else:  # the company contact's account is not coupled in this stack: create the contact row directly
        contact_dv = sims.dv_create("contacts", lastname="Opp person")
        resp = api.post("/api/mappings/CONTACT/couplings", json={"bcId": person, "dataverseId": contact_dv})
        assert resp.status_code == 201, resp.text
    person_number = sims.bc_get("contacts", person)["number"]
    opp = sims.bc_create("opportunities", contactNumber=person_number, description="Big deal", estimatedValue=1000)
    row = sims.dv_get("opportunities", couple_new(api, "OPPORTUNITY", opp))
    assert (row["name"], row["estimatedvalue"], row["_parentcontactid_value"]) == ("Big deal", 1000, contact_dv)
    # From Dataverse: a new opportunity row becomes a BC opportunity of the coupled contact.
    d = sims.dv_create(
        "opportunities",
        name="From Sales",
        estimatedvalue=250,
        **{"parentcontactid@odata.bind": f"/contacts({contact_dv})"},
    )
    resp = api.post("/api/mappings/OPPORTUNITY/couplings", json={"dataverseId": d, "createNew": True})
    assert resp.status_code == 201, resp.text
    created = sims.bc_get("opportunities", resp.json()["bcId"])
    assert (created["description"], created["contactNumber"], created["estimatedValue"]) == (
        "From Sales",
        person_number,
        250,
    )


def test_full_jobs_over_all_mappings_couple_everything_once(api: Any, world: dict[str, Any], stack: Any) -> None:
    """BC records of every default mapping, none of them in Dataverse: full jobs of all mappings (in the
    order GET /api/mappings lists them, BC's dependency order) couple each one once, and again change nothing."""
    sims = world["sims"]
    tag = uuid.uuid4().hex[:6]
    email = f"full.{tag}@contoso.example"
    user = dv_seed(stack, "systemusers", {"internalemailaddress": email, "fullname": f"Full {tag}"})
    iso, unit = code("F", 3), code("FU", 4)
    sp_code = code("FS", 4)
    bc: dict[str, list[str]] = {
        "CURRENCY": [sims.bc_create("currencies", code=iso, displayName=f"Full {tag}", symbol="f")],
        "PAYMENT TERMS": [sims.bc_create("paymentTerms", code=code("FP"), displayName="Full terms")],
        "SHIPMENT METHOD": [sims.bc_create("shipmentMethods", code=code("FM"), displayName="Full ship")],
        "UNIT OF MEASURE": [sims.bc_create("unitsOfMeasure", code=unit, displayName="Full unit")],
        "SALESPEOPLE": [sims.bc_create("salespeoplePurchasers", code=sp_code, email=email)],
    }
    resp = api.post("/api/mappings/SALESPEOPLE/couplings", json={"bcId": bc["SALESPEOPLE"][0], "dataverseId": user})
    assert resp.status_code == 201, resp.text  # BC never creates salespeople from users by match; coupled by hand
    bc["CUSTOMER"] = [
        sims.bc_create(
            "customers",
            displayName=f"Full customer {tag}",
            currencyCode=iso,
            salespersonCode=sp_code,
            paymentTermsId=bc["PAYMENT TERMS"][0],
            shipmentMethodId=bc["SHIPMENT METHOD"][0],
        )
    ]
    bc["VENDOR"] = [sims.bc_create("vendors", displayName=f"Full vendor {tag}", currencyCode=iso)]
    bc["ITEM-PRODUCT"] = [sims.bc_create("items", displayName=f"Full item {tag}", baseUnitOfMeasureCode=unit)]
    names = [x["name"] for x in api.get("/api/mappings").json()["value"]]
    assert names.index("CURRENCY") < names.index("CUSTOMER") < names.index("CONTACT") < names.index("OPPORTUNITY")
    # The child first: its job brings the parents (currency, terms, shipment, salespeople) up to date itself.
    job = run_job(api, "CUSTOMER", {"kind": "incremental"})
    assert coupled_to(api, "CUSTOMER", bc["CUSTOMER"][0]) is not None, job
    for name in names:
        if name in bc:
            job = run_job(api, name, {"kind": "full"})
            assert job["status"] in ("succeeded", "partial"), job
    dv_ids = {}
    for name, ids in bc.items():
        for bc_id in ids:
            dv_ids[name] = coupled_to(api, name, bc_id)
            assert dv_ids[name] is not None, f"{name} {bc_id} not coupled"
    assert count(world, "transactioncurrencies", "transactioncurrencyid", f"isocurrencycode eq '{iso}'") == 1
    assert count(world, "uomschedules", "uomscheduleid", f"name eq '{unit}'") == 1
    assert sims.dv_count("accounts", f"name eq 'Full customer {tag}'") == 1
    assert sims.dv_count("accounts", f"name eq 'Full vendor {tag}'") == 1
    assert sims.dv_count("products", f"name eq 'Full item {tag}'") == 1
    account = sims.dv_get("accounts", dv_ids["CUSTOMER"])
    assert (account["_transactioncurrencyid_value"], account["_ownerid_value"]) == (dv_ids["CURRENCY"], user)
    product = sims.dv_get("products", dv_ids["ITEM-PRODUCT"])
    assert product["_defaultuomscheduleid_value"] == dv_ids["UNIT OF MEASURE"]
    # Again: nothing new.
    for name in ("CURRENCY", "UNIT OF MEASURE", "CUSTOMER", "VENDOR", "ITEM-PRODUCT"):
        again = run_job(api, name, {"kind": "full"})
        assert again["counts"]["inserted"] == 0, (name, again)
    assert count(world, "transactioncurrencies", "transactioncurrencyid", f"isocurrencycode eq '{iso}'") == 1
