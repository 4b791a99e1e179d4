"""Between remote records and the planner's values: field extraction, payloads, and lookups resolved in
batches through the parent mapping's couplings (a contact's company <-> its account's parent)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.domain.model import RemoteRecord
from shared.mappings.config import FieldMap, TableMapping
from shared.planning.identity_keys import bc_number_for, dataverse_id_for  # noqa: F401 -- re-exported
from shared.ports import CouplingStore, RecordService


def odata_string(value: str) -> str:
    """An OData string literal; single quotes doubled so a value can't end the literal (no filter injection)."""
    return "'" + value.replace("'", "''") + "'"


class RecordCodec:
    """Field values of one mapping, in the planner's shape (``FieldMap.key`` -> value)."""

    def __init__(
        self,
        mapping: TableMapping,
        parents: dict[str, TableMapping],
        bc: RecordService,
        couplings: CouplingStore,
    ) -> None:
        self.mapping = mapping
        self._parents = parents
        self._bc = bc
        self._couplings = couplings

    @property
    def _lookups(self) -> list[FieldMap]:
        return [f for f in self.mapping.fields if f.lookup is not None]

    # ------------------------------------------------------------------ reading
    def dv_values(self, record: RemoteRecord) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self.mapping.fields:
            if f.dataverse is None or f.constant is not None:
                continue
            name = f"_{f.dataverse}_value" if f.lookup else f.dataverse
            value = record.fields.get(name)
            out[f.key] = value.lower() if f.lookup and isinstance(value, str) else value
        return out

    async def bc_values_many(self, records: Iterable[RemoteRecord]) -> dict[str, dict[str, Any]]:
        """BC values of many records; lookup fields become the parent's Dataverse id (or None)."""
        records = list(records)
        out: dict[str, dict[str, Any]] = {}
        for r in records:
            out[r.id] = {
                f.key: r.fields.get(f.bc) for f in self.mapping.fields if f.bc is not None and f.constant is None
            }
        for f in self._lookups:
            assert f.lookup is not None and f.bc is not None
            keys = {r.fields.get(f.bc) for r in records if r.fields.get(f.bc)}
            resolved = await self._bc_keys_to_dv_ids(f, {str(k) for k in keys})
            for r in records:
                key = r.fields.get(f.bc)
                out[r.id][f.key] = resolved.get(str(key)) if key else None
        return out

    async def _bc_keys_to_dv_ids(self, f: FieldMap, keys: set[str]) -> dict[str, str]:
        if not keys:
            return {}
        assert f.lookup is not None
        parent = self._parents[f.lookup.mapping]
        filt = f"{f.lookup.bc_key} in ({','.join(odata_string(k) for k in sorted(keys))})"
        parent_ids: dict[str, str] = {}
        async for page in self._bc.list_records(parent.bc_entity, select=["id", f.lookup.bc_key], filter=filt):
            for rec in page:
                parent_ids[rec.id] = str(rec.fields.get(f.lookup.bc_key))
        coupled = await self._couplings.get_many_by_bc_ids(parent.name, list(parent_ids))
        return {parent_ids[bc_id]: c.dataverse_id for bc_id, c in coupled.items()}

    # ------------------------------------------------------------------ writing
    def dv_payload(self, values: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self.mapping.fields:
            if f.key not in values or f.dataverse is None:
                continue
            if f.lookup is not None:
                target = values[f.key]
                bind = f"{f.dataverse}_{self._parents[f.lookup.mapping].dataverse_table}@odata.bind"
                out[bind] = f"/{f.lookup.dataverse_entity_set}({target})" if target else None
            else:
                out[f.dataverse] = values[f.key]
        return out

    async def bc_payloads(self, values_by_ref: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """BC payloads of many records; lookups turned back into the parent's BC key (e.g. number)."""
        out: dict[str, dict[str, Any]] = {
            ref: {f.bc: v[f.key] for f in self.mapping.fields if f.bc is not None and f.key in v and f.lookup is None}
            for ref, v in values_by_ref.items()
        }
        for f in self._lookups:
            assert f.lookup is not None and f.bc is not None
            dv_ids = {str(v[f.key]) for v in values_by_ref.values() if v.get(f.key)}
            keys = await self._dv_ids_to_bc_keys(f, dv_ids)
            for ref, v in values_by_ref.items():
                if f.key in v:
                    # An unresolvable parent is left out rather than blanked: it syncs once the parent is coupled.
                    if v[f.key] and v[f.key] in keys:
                        out[ref][f.bc] = keys[v[f.key]]
                    elif not v[f.key] or f.clear_on_fail:
                        out[ref][f.bc] = ""
        return out

    async def _dv_ids_to_bc_keys(self, f: FieldMap, dv_ids: set[str]) -> dict[str, str]:
        if not dv_ids:
            return {}
        assert f.lookup is not None
        parent = self._parents[f.lookup.mapping]
        coupled = await self._couplings.get_many_by_dataverse_ids(parent.name, list(dv_ids))
        records = await self._bc.get_many(
            parent.bc_entity, [c.bc_id for c in coupled.values()], select=["id", f.lookup.bc_key]
        )
        return {
            dv_id: str(records[c.bc_id].fields.get(f.lookup.bc_key))
            for dv_id, c in coupled.items()
            if c.bc_id in records
        }

    def unresolved_parents(self, bc_values: dict[str, Any], record: RemoteRecord) -> list[str]:
        """Lookup fields whose BC key is set but whose parent is not coupled (a dependency failure)."""
        missing = []
        for f in self._lookups:
            assert f.bc is not None
            if f.clear_on_fail:
                continue  # BC's "Clear Value on Failed Sync": the empty value is written instead
            if record.fields.get(f.bc) and not bc_values.get(f.key):
                missing.append(f"{f.bc}={record.fields.get(f.bc)}")
        return missing
