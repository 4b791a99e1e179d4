"""Both simulators' metadata is generated from their schemas: every simulated field appears, with its type,
length and writability, and the service's parsers read it back the same way."""

from __future__ import annotations

from local.bc_sim import metadata as bc_metadata
from local.bc_sim.entities import CUSTOM_API, SCHEMAS, api_of
from local.dv_sim import metadata as dv_metadata
from local.dv_sim.store import TABLES
from shared.services.metadata import parse_dv_entity, parse_edmx


def test_bc_edmx_lists_every_schema_field_of_its_api() -> None:
    for api in ("v2.0", CUSTOM_API):
        sets = parse_edmx(bc_metadata.edmx(api))
        for key, schema in SCHEMAS.items():
            if api_of(key) != api:
                assert schema.name not in sets or api_of(key) == "v2.0"
                continue
            meta = sets[schema.name]
            assert set(meta.fields) == set(schema.fields), schema.name
            for name in schema.fields:
                f = meta.fields[name]
                assert f.writable == (name not in schema.read_only), (schema.name, name)
                if name in schema.max_length and f.kind == "text":
                    assert f.max_length == schema.max_length[name]
                if name in schema.enums:
                    assert f.kind == "enum" and f.members == schema.enums[name]
    assert "serviceSites" not in parse_edmx(bc_metadata.edmx("v2.0"))


def test_dataverse_attributes_list_every_table_field() -> None:
    for table in TABLES.values():
        attrs = dv_metadata.attributes_of(table)
        meta = parse_dv_entity(dv_metadata.entity_of(table), attrs)
        assert meta.entity_set == table.entity_set and meta.primary_key == table.primary_key
        expected = {n[1:-6] if n.startswith("_") and n.endswith("_value") else n for n in table.fields}
        assert set(meta.fields) == expected, table.logical
        for name, fdef in table.fields.items():
            if name.startswith("_"):
                continue
            f = meta.fields[name]
            if fdef.kind == "string":
                assert f.max_length == fdef.max_length
            if fdef.read_only or table.read_only:
                assert not f.writable, (table.logical, name)
