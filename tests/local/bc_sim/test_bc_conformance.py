"""The BC simulator against Microsoft's documentation: $metadata and answers compared with the recorded
v2.0 resource types and error codes in fixtures/learn_v2_entities.json (each with its source)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.local.bc_sim.conftest import BASE, COMPANY

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "learn_v2_entities.json").read_text())
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
ENTITIES = ("customers", "contacts", "items")
NAMES = {"customers": {"displayName": "Conformance"}, "contacts": {"displayName": "Conformance"}, "items": {}}


async def _metadata(bc: TestClient) -> ET.Element:
    resp = await bc.get(f"{BASE}/$metadata")
    assert resp.status == 200
    return ET.fromstring(await resp.text())  # noqa: S314 -- our own simulator's document


def _entity_type(root: ET.Element, entity: str) -> ET.Element:
    sets = {s.get("Name"): s.get("EntityType") for s in root.iter(f"{EDM}EntitySet")}
    type_name = str(sets[entity]).rsplit(".", 1)[-1]
    return next(t for t in root.iter(f"{EDM}EntityType") if t.get("Name") == type_name)


@pytest.mark.parametrize("entity", ENTITIES)
async def test_metadata_has_the_documented_properties_types_and_read_only_flags(bc: TestClient, entity: str) -> None:
    expected: dict[str, Any] = FIXTURE[entity]
    root = await _metadata(bc)
    props = {p.get("Name"): p for p in _entity_type(root, entity).iter(f"{EDM}Property")}
    assert set(props) == set(expected["properties"]), expected["source"]
    for name, kind in expected["properties"].items():
        declared = str(props[name].get("Type"))
        assert declared.startswith("Microsoft.NAV.") if kind == "enum" else declared == kind, (name, declared)
    computed = {n for n, p in props.items() if p.find(f"{EDM}Annotation") is not None}
    assert computed == set(expected["readOnly"]) - {"id"}
    enums = {e.get("Name"): [m.get("Name") for m in e] for e in root.iter(f"{EDM}EnumType")}
    for name, members in expected["enums"].items():
        enum_name = str(props[name].get("Type")).rsplit(".", 1)[-1]
        assert enums[enum_name] == members, name


@pytest.mark.parametrize("entity", ENTITIES)
async def test_answers_carry_exactly_the_documented_properties(bc: TestClient, entity: str) -> None:
    resp = await bc.post(f"{BASE}/companies({COMPANY})/{entity}", json=NAMES[entity])
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    props = {k for k in body if not k.startswith("@")}
    assert props == set(FIXTURE[entity]["properties"]), FIXTURE[entity]["source"]


async def test_error_answers_use_the_documented_codes(bc: TestClient) -> None:
    errors = FIXTURE["errors"]
    created = await (await bc.post(f"{BASE}/companies({COMPANY})/customers", json={"displayName": "E"})).json()
    url = f"{BASE}/companies({COMPANY})/customers({created['id']})"
    await bc.patch(url, json={"city": "A"}, headers={"If-Match": created["@odata.etag"]})
    answers = {
        "staleEtag": await bc.patch(url, json={"city": "B"}, headers={"If-Match": created["@odata.etag"]}),
        "missingIfMatch": await bc.patch(url, json={"city": "C"}),
        "notFound": await bc.get(f"{BASE}/companies({COMPANY})/customers(00000000-0000-0000-0000-000000000009)"),
    }
    for name, resp in answers.items():
        assert resp.status == errors[name]["status"], name
        assert (await resp.json())["error"]["code"] == errors[name]["code"], name
