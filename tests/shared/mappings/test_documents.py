"""Mapping documents layered over the shipped file, through the registry and the admin service (fakes)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.domain.mapping_errors import NotUserDefinedError, PreconditionFailedError
from shared.mappings.documents import MappingDocument, effective_mapping
from shared.services.mapping_admin import MappingAdmin
from shared.services.metadata import EntityMeta, FieldMeta
from tests.fake_services import fake_engine


class FakeCatalog:
    async def bc_entity(self, entity: str) -> EntityMeta:
        text = {n: FieldMeta(n, "text", "Edm.String", 100) for n in ("taxRegistrationNumber", "displayName", "city")}
        return EntityMeta("businessCentral", entity, text)

    async def dv_entity(self, logical: str) -> EntityMeta:
        text = {n: FieldMeta(n, "text", "String", 100) for n in ("description", "name", "address1_city")}
        return EntityMeta("dataverse", logical, text)


@pytest.fixture
def admin() -> MappingAdmin:
    return MappingAdmin(fake_engine(), FakeCatalog())  # type: ignore[arg-type]


def test_no_document_is_the_shipped_mapping_and_shipped_match_fields_become_flags() -> None:
    engine: Any = fake_engine()
    shipped = engine.registry.shipped("CUSTOMER")
    m = effective_mapping(shipped, None)
    assert [f.id for f in m.fields] == [f.id for f in shipped.fields] and m.match_fields == ()
    flags = {f.id: (f.use_for_match, f.match_priority) for f in m.fields if f.use_for_match}
    assert flags == {"number~accountnumber": (True, 1), "displayName~name": (True, 2)}


async def test_layers_apply_in_order_and_every_change_is_a_new_version(admin: MappingAdmin) -> None:
    reg = admin.registry
    m, etag0 = await admin.view("CUSTOMER")
    m, etag1 = await admin.patch_settings("CUSTOMER", {"conflictPolicy": "bcWins"}, etag0)
    assert m.conflict_policy == "bcWins" and etag1 != etag0
    with pytest.raises(PreconditionFailedError):
        await admin.patch_settings("CUSTOMER", {"scheduleMinutes": 9}, etag0)
    f = await admin.patch_field("CUSTOMER", "city~address1_city", {"status": "disabled"})
    assert f.status == "disabled"
    added = await admin.add_field("CUSTOMER", {"bc": "taxRegistrationNumber", "dataverse": "description"})
    assert added.user_defined
    m = await reg.get("CUSTOMER")
    assert "city~address1_city" not in [x.id for x in m.fields]  # disabled: neither read nor written
    assert "city~address1_city" in [x.id for x in m.all_fields]
    assert "taxRegistrationNumber" in m.bc_select and "city" not in m.bc_select
    with pytest.raises(NotUserDefinedError):
        await admin.delete_field("CUSTOMER", "city~address1_city")
    doc = await reg.documents.get("CUSTOMER")
    assert isinstance(doc, MappingDocument) and doc.version == 3
    assert doc.to_json() == {
        "name": "CUSTOMER",
        "version": 3,
        "userDefined": False,
        "base": None,
        "settings": {"conflictPolicy": "bcWins"},
        "fieldPatches": {"city~address1_city": {"status": "disabled"}},
        "addedFields": [doc.added_fields[0]],
    }
    m, _ = await admin.reset("CUSTOMER")
    assert m.conflict_policy == "none" and "city~address1_city" in [x.id for x in m.fields]
    assert (await reg.documents.get("CUSTOMER")).version == 4  # a reset is a new version too


async def test_part_1_settings_rows_are_kept_by_the_first_document() -> None:
    from shared.domain.model import Direction, MappingSettings

    engine: Any = fake_engine()
    legacy = engine.registry._legacy
    await legacy.put(MappingSettings(mapping="CUSTOMER", direction=Direction.TO_DATAVERSE, state="paused"))
    engine.registry.invalidate()
    m = await engine.registry.get("CUSTOMER")
    assert (m.direction, m.state) == (Direction.TO_DATAVERSE, "paused")
    admin = MappingAdmin(engine, FakeCatalog())  # type: ignore[arg-type]
    m, _ = await admin.patch_settings("CUSTOMER", {"scheduleMinutes": 7}, None)
    assert (m.direction, m.state, m.schedule_minutes) == (Direction.TO_DATAVERSE, "paused", 7)
