"""BC's "Integration Table Mappings" and "Integration Field Mappings" pages over the API: read and change
a mapping's settings and field mappings, add user-defined mappings, reset to the shipped definition.

Every change is validated completely before anything is stored (a half-valid change stores nothing):
the layered mapping must be valid, filters pass one ``$top=1`` probe on their side, field mappings fit
both sides' metadata. Writes are optimistic (If-Match on the mapping's ETag, and on the stored row).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pydantic

from shared.domain.errors import MappingNotFoundError
from shared.domain.mapping_errors import (
    BY_CODE,
    FieldNotFoundError,
    InvalidFilterError,
    InvalidMappingError,
    MappingExistsError,
    NotShippedError,
    NotUserDefinedError,
    PreconditionFailedError,
    UnknownEntityError,
)
from shared.domain.model import Direction
from shared.errors import PreconditionFailedError as StorePreconditionFailed
from shared.errors import SyncError
from shared.mappings.config import FieldMap, TableMapping, field_id
from shared.mappings.documents import MappingDocument, effective_mapping, field_json
from shared.mappings.field_rules import check_field
from shared.services.engine import Engine
from shared.services.metadata import EntityMeta, MetadataCatalog
from shared.services.registry import MappingRegistry
from shared.stores.mapping_document_store import DocumentTooLargeError

SNAKE_TO_SETTING = {"direction": "direction", "sync_only_coupled": "syncOnlyCoupled", "state": "state"}
MAPPING_NAME = re.compile(r"^[A-Z0-9][A-Z0-9 -]{0,19}$")  # BC's Code[20]


def etag_matches(if_match: str | None, etag: str) -> bool:
    if if_match is None:
        return True
    wanted = {t.strip().removeprefix("W/").strip('"') for t in if_match.split(",")}
    return "*" in wanted or etag.removeprefix("W/").strip('"') in wanted


class MappingAdmin:
    def __init__(self, engine: Engine, catalog: MetadataCatalog) -> None:
        self.e = engine
        self.catalog = catalog

    @property
    def registry(self) -> MappingRegistry:
        return self.e.registry

    # ------------------------------------------------------------------ reading
    async def view(self, name: str) -> tuple[TableMapping, str]:
        mapping = await self.registry.get(name)
        return mapping, self.registry.etag(name, await self.registry.document(name))

    async def _current(self, name: str, if_match: str | None) -> tuple[MappingDocument, TableMapping]:
        """The stored document (fresh, not cached) and the mapping in force; a stale If-Match -> 412."""
        doc = await self.registry.document(name, fresh=True)
        if doc is None and not self.registry.is_shipped(name):
            raise MappingNotFoundError(f"There is no table mapping named '{name[:60]}'.")
        etag = self.registry.etag(name, doc)
        if not etag_matches(if_match, etag):
            raise PreconditionFailedError(
                f"The mapping {name} changed since it was read (its ETag is now {etag}); read it again.",
                etag=etag,
            )
        shipped = self.registry.shipped(name) if self.registry.is_shipped(name) else None
        try:
            current = effective_mapping(shipped, doc)
        except ValueError:
            if shipped is None:
                raise InvalidMappingError(f"The stored mapping {name} is not valid any more.") from None
            current = effective_mapping(shipped, None)  # a stored document that no longer fits: start over
        return doc or MappingDocument(name=name), current

    def _build(self, doc: MappingDocument) -> TableMapping:
        shipped = self.registry.shipped(doc.name) if self.registry.is_shipped(doc.name) else None
        try:
            return effective_mapping(shipped, doc)
        except pydantic.ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "mapping"
            raise InvalidMappingError(f"{where}: {first.get('msg')}") from None
        except ValueError as e:
            raise InvalidMappingError(str(e)) from None

    async def _store(self, doc: MappingDocument) -> tuple[TableMapping, str]:
        try:
            stored = await self.registry.documents.put(doc)
        except StorePreconditionFailed:
            raise PreconditionFailedError(f"The mapping {doc.name} was changed by another request meanwhile.") from None
        except DocumentTooLargeError as e:
            raise InvalidMappingError(f"The mapping is too large to store ({e}).") from None
        self.registry.invalidate()
        return await self.registry.get(doc.name), self.registry.etag(doc.name, stored)

    # ------------------------------------------------------------------ table mapping settings
    async def patch_settings(
        self, name: str, changes: Mapping[str, Any], if_match: str | None
    ) -> tuple[TableMapping, str]:
        doc, current = await self._current(name, if_match)
        updated = doc.copy()
        for key, value in changes.items():
            updated.settings[key] = value
        new = self._build(updated)
        if changes.get("tableFilter"):
            await self._probe("businessCentral", new.bc_entity, str(changes["tableFilter"]))
        if changes.get("integrationTableFilter"):
            await self._probe("dataverse", new.dataverse_entity_set, str(changes["integrationTableFilter"]))
        if "direction" in changes and new.direction != current.direction:
            if new.create_once and new.direction != Direction.TO_DATAVERSE:  # #21: posted invoices go one way
                from shared.domain.errors import DirectionNotAllowedError

                raise DirectionNotAllowedError(
                    f"Mapping {new.name} sends posted documents to Dataverse only; they are never taken back.",
                    allowed=[Direction.TO_DATAVERSE.value],
                )
            await self._check_all_fields(new)
        return await self._store(updated)

    async def _probe(self, side: str, entity: str, filter_: str) -> None:
        client = self.e.bc if side == "businessCentral" else self.e.dv
        try:
            await client.probe(entity, filter_)
        except SyncError as e:
            if e.transient:
                raise
            label = "Business Central" if side == "businessCentral" else "Dataverse"
            raise InvalidFilterError(
                f"{label} refused the filter on {entity}: {e.message[:300]}", side=side, serviceCode=e.code
            ) from None

    # ------------------------------------------------------------------ metadata checks
    async def _metas(self, mapping: TableMapping) -> tuple[EntityMeta, EntityMeta]:
        bc = await self.catalog.bc_entity(mapping.bc_entity)
        if bc is None:
            raise UnknownEntityError(
                f"Business Central API {mapping.bc_api} has no entity set '{mapping.bc_entity_name}'.",
                side="businessCentral",
            )
        dv = await self.catalog.dv_entity(mapping.dataverse_table)
        if dv is None:
            raise UnknownEntityError(f"Dataverse has no table '{mapping.dataverse_table}'.", side="dataverse")
        return bc, dv

    async def _check(self, mapping: TableMapping, f: FieldMap, others: list[FieldMap]) -> None:
        bc, dv = await self._metas(mapping)
        if f.lookup is not None:
            try:
                await self.registry.get(f.lookup.mapping)
            except MappingNotFoundError:
                raise InvalidMappingError(f"The lookup names the unknown mapping '{f.lookup.mapping}'.") from None
        problem = check_field(f, mapping.direction, bc, dv, others)
        if problem is not None:
            raise BY_CODE[problem.code](problem.detail, field=f.id)

    async def _check_all_fields(self, mapping: TableMapping) -> None:
        """A direction change re-checks the user-defined field mappings against the new direction."""
        fields = list(mapping.fields)
        for f in fields:
            if f.user_defined:
                await self._check(mapping, f, [o for o in fields if o is not f])

    # ------------------------------------------------------------------ field mappings
    async def list_fields(self, name: str) -> list[FieldMap]:
        return list((await self.registry.get(name)).all_fields)

    async def add_field(self, name: str, body: dict[str, Any], if_match: str | None = None) -> FieldMap:
        doc, current = await self._current(name, if_match)
        try:
            f = FieldMap.model_validate({**body, "userDefined": True})
        except pydantic.ValidationError as e:
            raise InvalidMappingError(str(e.errors()[0].get("msg"))) from None
        if any(o.id == f.id for o in current.all_fields):
            raise BY_CODE["field_already_mapped"](f"The field mapping '{f.id}' exists already.", field=f.id)
        await self._check(current, f, list(current.fields))
        updated = doc.copy()
        updated.added_fields.append(_stored_field(f))
        self._build(updated)
        mapping, _ = await self._store(updated)
        return next(x for x in mapping.all_fields if x.id == f.id)

    def _locate(self, current: TableMapping, fid: str) -> FieldMap:
        for f in current.all_fields:
            if f.id == fid:
                return f
        raise FieldNotFoundError(f"The mapping {current.name} has no field mapping '{fid[:100]}'.")

    async def patch_field(
        self, name: str, fid: str, changes: Mapping[str, Any], if_match: str | None = None
    ) -> FieldMap:
        doc, current = await self._current(name, if_match)
        old = self._locate(current, fid)
        updated = doc.copy()
        if old.user_defined:
            entry = next(x for x in updated.added_fields if field_id(x.get("bc"), x.get("dataverse")) == fid)
            entry.update(changes)
            updated.added_fields = [
                entry if field_id(x.get("bc"), x.get("dataverse")) == fid else x for x in updated.added_fields
            ]
        else:
            patch = {**updated.field_patches.get(fid, {}), **changes}
            updated.field_patches[fid] = patch
        mapping = self._build(updated)
        new = next(x for x in mapping.all_fields if x.id == fid)
        if new.status == "enabled":
            await self._check(mapping, new, [o for o in mapping.fields if o.id != fid])
        stored, _ = await self._store(updated)
        return next(x for x in stored.all_fields if x.id == fid)

    async def delete_field(self, name: str, fid: str, if_match: str | None = None) -> None:
        doc, current = await self._current(name, if_match)
        f = self._locate(current, fid)
        if not f.user_defined:
            raise NotUserDefinedError(
                f"The field mapping '{fid}' is shipped with the mapping; it can only be disabled "
                '(PATCH {"status": "disabled"}).'
            )
        updated = doc.copy()
        updated.added_fields = [x for x in updated.added_fields if field_id(x.get("bc"), x.get("dataverse")) != fid]
        updated.field_patches.pop(fid, None)
        self._build(updated)
        await self._store(updated)

    # ------------------------------------------------------------------ whole mappings
    async def reset(self, name: str, if_match: str | None = None) -> tuple[TableMapping, str]:
        doc, _ = await self._current(name, if_match)
        if not self.registry.is_shipped(name):
            raise NotShippedError(f"The mapping {name} is user-defined; it has no shipped definition to reset to.")
        if not doc.version:
            return await self.registry.get(name), self.registry.etag(name, None)
        # A reset is a new version with nothing overridden (versions never restart, so caches keyed by
        # version never see an old one again).
        return await self._store(MappingDocument(name=name, version=doc.version, row_etag=doc.row_etag))

    async def create(self, body: dict[str, Any]) -> tuple[TableMapping, str]:
        name = str(body["name"])
        if not MAPPING_NAME.match(name):
            raise InvalidMappingError("name must match ^[A-Z0-9][A-Z0-9 -]{0,19}$ (BC's Code[20]).")
        if self.registry.is_shipped(name) or await self.registry.document(name, fresh=True) is not None:
            raise MappingExistsError(f"A table mapping named {name} exists already.")
        api = body.get("bcApi") or "v2.0"
        bc_ref = body["bcEntity"] if api == "v2.0" else f"{api}/{body['bcEntity']}"
        bc = await self.catalog.bc_entity(bc_ref)
        if bc is None:
            raise UnknownEntityError(
                f"Business Central API {api} has no entity set '{body['bcEntity']}'.", side="businessCentral"
            )
        dv = await self.catalog.dv_entity(body["dataverseTable"])
        if dv is None:
            raise UnknownEntityError(f"Dataverse has no table '{body['dataverseTable']}'.", side="dataverse")
        entity_set = body.get("dataverseEntitySet") or dv.entity_set
        key = body.get("dataversePrimaryKey") or dv.primary_key
        if entity_set != dv.entity_set or key != dv.primary_key:
            raise UnknownEntityError(
                f"Dataverse table {dv.name} has the entity set '{dv.entity_set}' and the primary key "
                f"'{dv.primary_key}', not '{entity_set}' / '{key}'.",
                side="dataverse",
            )
        base: dict[str, Any] = {
            k: v
            for k, v in body.items()
            if k not in ("fields", "bcApi", "dataverseEntitySet", "dataversePrimaryKey") and v is not None
        }
        base.update(
            bcEntity=bc_ref,
            dataverseEntitySet=entity_set,
            dataversePrimaryKey=key,
            bcNaturalKey="number" if "number" in bc.fields else None,
            fields=[],
        )
        base.setdefault("deletionPolicy", "none")
        doc = MappingDocument(name=name, user_defined=True, base=base)
        draft = self._build(doc)
        fields: list[FieldMap] = []
        for raw in body.get("fields") or []:
            try:
                f = FieldMap.model_validate({**raw, "userDefined": True})
            except pydantic.ValidationError as e:
                raise InvalidMappingError(f"fields: {e.errors()[0].get('msg')}") from None
            if f.lookup is not None:
                await self._check(draft, f, fields)
            problem = check_field(f, draft.direction, bc, dv, fields)
            if problem is not None:
                raise BY_CODE[problem.code](problem.detail, field=f.id)
            fields.append(f)
        doc.added_fields = [_stored_field(f) for f in fields]
        self._build(doc)
        try:
            stored = await self.registry.documents.put(doc)
        except StorePreconditionFailed:
            raise MappingExistsError(f"A table mapping named {name} was created meanwhile.") from None
        self.registry.invalidate()
        return await self.registry.get(name), self.registry.etag(name, stored)

    async def remove(self, name: str) -> None:
        """Deletes a user-defined mapping's document (its couplings are removed first, by the job)."""
        doc = await self.registry.document(name, fresh=True)
        if doc is None:
            return
        await self.registry.documents.delete(name, None)
        self.registry.invalidate()

    async def check_match_fields(self, mapping: TableMapping, items: list[dict[str, Any]]) -> None:
        """A per-run match criteria override names fields both sides know (else 422 unknown_field)."""
        bc, dv = await self._metas(mapping)
        for item in items:
            if item["bc"] not in bc.fields:
                raise BY_CODE["unknown_field"](f"Business Central {bc.name} has no field '{item['bc']}'.")
            if item["dataverse"] not in dv.fields:
                raise BY_CODE["unknown_field"](f"Dataverse {dv.name} has no attribute '{item['dataverse']}'.")

    async def check_deletable(self, name: str) -> TableMapping:
        mapping = await self.registry.get(name)
        if not mapping.user_defined:
            raise NotUserDefinedError(f"The mapping {name} is shipped; it can be paused or reset, not deleted.")
        return mapping


def _stored_field(f: FieldMap) -> dict[str, Any]:
    return field_json(f)


def direction_of(value: Any) -> Direction:
    return value if isinstance(value, Direction) else Direction(str(value))


_ADMINS: dict[int, tuple[Engine, MappingAdmin]] = {}


def admin_for(engine: Engine) -> MappingAdmin:
    """One admin service (and metadata cache) per engine, i.e. per process."""
    hit = _ADMINS.get(id(engine))
    if hit is None or hit[0] is not engine:
        hit = (engine, MappingAdmin(engine, MetadataCatalog(engine.bc, engine.dv)))
        _ADMINS[id(engine)] = hit
    return hit[1]
