"""Between remote records and the planner's values: field extraction, payloads, and lookups resolved in
batches through the parent mapping's couplings (a contact's company <-> its account's parent)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import cached_property
from typing import Any

from shared.connectors._odata import dataverse_in_filter
from shared.domain.model import RemoteRecord
from shared.mappings.config import FieldMap, TableMapping
from shared.planning.identity_keys import bc_number_for, dataverse_id_for  # noqa: F401 -- re-exported
from shared.ports import CouplingStore, RecordService


def odata_string(value: str) -> str:
    """An OData string literal; single quotes doubled so a value can't end the literal (no filter injection)."""
    return "'" + value.replace("'", "''") + "'"


LOCAL_CURRENCY_TTL_S = 300.0


class RecordCodec:
    """Field values of one mapping, in the planner's shape (``FieldMap.key`` -> value)."""

    def __init__(
        self,
        mapping: TableMapping,
        parents: dict[str, TableMapping],
        bc: RecordService,
        couplings: CouplingStore,
        dv: RecordService | None = None,
        cache: dict[str, Any] | None = None,
    ) -> None:
        self.mapping = mapping
        self._parents = parents
        self._bc = bc
        self._couplings = couplings
        self._dv = dv
        # Shared by the codecs of one engine: the local currency's Dataverse id, kept for a few minutes.
        self._cache = cache if cache is not None else {}

    @property
    def _lookups(self) -> list[FieldMap]:
        return [f for f in self.mapping.fields if f.lookup is not None]

    # The per-record loops below read these once per codec (the mapping is frozen): field key, the name the
    # value is read from, whether it is a lookup.
    @cached_property
    def _dv_reads(self) -> list[tuple[str, str, bool]]:
        out = []
        for f in self.mapping.fields:
            if f.dataverse is None or f.constant is not None:
                continue
            option = f.lookup is not None and f.lookup.kind == "option"
            name = f"_{f.dataverse}_value" if f.lookup and not option else f.dataverse
            out.append((f.key, name, f.lookup is not None))
        return out

    @cached_property
    def _bc_reads(self) -> list[tuple[str, str]]:
        return [(f.key, f.bc) for f in self.mapping.fields if f.bc is not None and f.constant is None]

    # ------------------------------------------------------------------ reading
    def dv_values(self, record: RemoteRecord) -> dict[str, Any]:
        fields = record.fields
        out: dict[str, Any] = {}
        for key, name, lookup in self._dv_reads:
            value = fields.get(name)
            out[key] = value.lower() if lookup and isinstance(value, str) else value
        return out

    async def bc_values_many(self, records: Iterable[RemoteRecord]) -> dict[str, dict[str, Any]]:
        """BC values of many records; lookup fields become the parent's Dataverse id (or None)."""
        records = list(records)
        out: dict[str, dict[str, Any]] = {}
        reads = self._bc_reads
        for r in records:
            get = r.fields.get
            out[r.id] = {key: get(name) for key, name in reads}
        for f in self._lookups:
            assert f.lookup is not None and f.bc is not None
            name, fkey = f.bc, f.key
            # Each record's row and key read once; the blank ones (the common case) take the blank value.
            rows = [(out[r.id], r.fields.get(name)) for r in records]
            keys = {str(k) for _, k in rows if not is_blank(k)}
            resolved = await self._bc_keys_to_dv_ids(f, keys)
            local = await self._local_currency_id() if f.lookup.blank == "localCurrency" else None
            for row, key in rows:
                row[fkey] = resolved.get(str(key)) if not is_blank(key) else local
        return out

    async def _bc_keys_to_dv_ids(self, f: FieldMap, keys: set[str]) -> dict[str, Any]:
        if not keys:
            return {}
        assert f.lookup is not None
        parent = self._parents[f.lookup.mapping]
        parent_ids: dict[str, str] = {}
        if f.lookup.bc_key == "id":
            parent_ids = {k.lower(): k for k in keys}  # the field holds the parent's id: nothing to read
        else:
            filt = f"{f.lookup.bc_key} in ({','.join(odata_string(k) for k in sorted(keys))})"
            async for page in self._bc.list_records(parent.bc_entity, select=["id", f.lookup.bc_key], filter=filt):
                for rec in page:
                    parent_ids[rec.id] = str(rec.fields.get(f.lookup.bc_key))
        coupled = await self._couplings.get_many_by_bc_ids(parent.name, list(parent_ids))
        if f.lookup.kind == "option":
            return {parent_ids[bc_id]: int(c.dataverse_id) for bc_id, c in coupled.items()}
        ids = {parent_ids[bc_id]: c.dataverse_id for bc_id, c in coupled.items()}
        if f.lookup.kind == "baseUnit":
            units = await self._base_units(set(ids.values()))
            return {k: units[v] for k, v in ids.items() if v in units}
        return ids

    async def _base_units(self, group_ids: set[str]) -> dict[str, str]:
        """Unit group id -> its base unit's id (one query per batch)."""
        if not group_ids or self._dv is None:
            return {}
        filt = "isschedulebaseuom eq true and " + dataverse_in_filter("_uomscheduleid_value", sorted(group_ids))
        out: dict[str, str] = {}
        async for page in self._dv.list_records("uoms", select=["uomid", "_uomscheduleid_value"], filter=filt):
            for rec in page:
                out[str(rec.fields.get("_uomscheduleid_value")).lower()] = rec.id
        return out

    async def _local_currency_id(self) -> str | None:
        """The Dataverse currency of the company's local currency (BC's blank Currency Code): the company's
        setup names it (companyInformation.currencyCode), Dataverse has it by ISO code."""
        cached = self._cache.get("localCurrency")
        if cached is not None and time.monotonic() - cached[1] < LOCAL_CURRENCY_TTL_S:
            return cached[0]
        code = ""
        async for page in self._bc.list_records("companyInformation", select=["id", "currencyCode"]):
            code = next((str(r.fields.get("currencyCode") or "") for r in page), "")
            break
        dv_id: str | None = None
        if code and self._dv is not None:
            filt = f"isocurrencycode eq {odata_string(code)}"
            async for page in self._dv.list_records(
                "transactioncurrencies", select=["transactioncurrencyid"], filter=filt
            ):
                dv_id = next((r.id for r in page), None)
                break
        if dv_id is not None or not code:  # not cached while missing: CURRENCY may create it any moment
            self._cache["localCurrency"] = (dv_id, time.monotonic())
        return dv_id

    # ------------------------------------------------------------------ writing
    @cached_property
    def _dv_writes(self) -> list[tuple[str, str, FieldMap | None]]:
        """Field key, the payload property, and the field when it is a record lookup (bound, not written)."""
        return [
            (f.key, f.dataverse, f if f.lookup is not None and f.lookup.kind != "option" else None)
            for f in self.mapping.fields
            if f.dataverse is not None
        ]

    def dv_payload(self, values: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, name, lookup in self._dv_writes:
            if key not in values:
                continue
            if lookup is None:
                out[name] = values[key]
            else:
                assert lookup.lookup is not None
                target = values[key]
                nav = lookup.lookup.navigation or f"{name}_{self._parents[lookup.lookup.mapping].dataverse_table}"
                out[f"{nav}@odata.bind"] = f"/{lookup.lookup.dataverse_entity_set}({target})" if target else None
        return out

    async def bc_payloads(self, values_by_ref: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """BC payloads of many records; lookups turned back into the parent's BC key (e.g. number)."""
        plain = [(f.key, f.bc) for f in self.mapping.fields if f.bc is not None and f.lookup is None]
        out: dict[str, dict[str, Any]] = {
            ref: {bc: v[key] for key, bc in plain if key in v} for ref, v in values_by_ref.items()
        }
        for f in self._lookups:
            assert f.lookup is not None and f.bc is not None
            dv_ids = {str(v[f.key]) for v in values_by_ref.values() if v.get(f.key) is not None}
            keys = await self._dv_ids_to_bc_keys(f, dv_ids)
            if f.lookup.blank == "localCurrency":
                local = await self._local_currency_id()
                if local is not None:
                    keys[local] = ""  # the local currency is BC's blank code
            for ref, v in values_by_ref.items():
                if f.key in v:
                    value = None if v[f.key] is None else str(v[f.key])
                    # An unresolvable parent is left out rather than blanked: it syncs once the parent is coupled.
                    if value is not None and value in keys:
                        out[ref][f.bc] = keys[value]
                    elif value is None or f.clear_on_fail:
                        out[ref][f.bc] = ""
        return out

    async def _dv_ids_to_bc_keys(self, f: FieldMap, dv_ids: set[str]) -> dict[str, str]:
        if not dv_ids:
            return {}
        assert f.lookup is not None
        parent = self._parents[f.lookup.mapping]
        coupled = await self._couplings.get_many_by_dataverse_ids(parent.name, list(dv_ids))
        if f.lookup.bc_key == "id":
            return {dv_id: c.bc_id for dv_id, c in coupled.items()}
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
            if not is_blank(record.fields.get(f.bc)) and bc_values.get(f.key) is None:
                missing.append(f"{f.bc}={record.fields.get(f.bc)}")
        return missing


EMPTY_GUID = "00000000-0000-0000-0000-000000000000"


def is_blank(value: Any) -> bool:
    """BC's empty value of a field: "" for codes, the empty GUID for ids (paymentTermsId)."""
    return value is None or value == "" or value == EMPTY_GUID
