"""Request models and response shapes of the mapping resources (contract part 2: table mappings, field
mappings, user-defined mappings, match-based coupling). Strict: unknown members and wrong types -> 400."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from functions._models import GuidList
from shared.domain.model import Direction
from shared.mappings.config import FieldMap, TableMapping

Name = Annotated[str, Field(strict=True, min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Filter = Annotated[str, Field(strict=True, min_length=1, max_length=2000)]
Scalar = StrictStr | StrictBool | StrictInt | float


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TransformBody(_Request):
    trim: StrictBool = False
    case: Literal["upper", "lower"] | None = None
    maxLength: Annotated[int, Field(ge=1, le=100_000)] | None = None


class LookupBody(_Request):
    mapping: Annotated[str, Field(min_length=1, max_length=50)]
    bcKey: Name = "number"
    dataverseEntitySet: Name


OptionMap = Annotated[dict[Annotated[str, Field(max_length=100)], Scalar], Field(max_length=500)]


class MappingSettingsPatch(_Request):
    """``PATCH /api/mappings/{m}``: any of the table mapping's settings (never its name or entities)."""

    direction: Direction | None = Field(None, strict=False)
    syncOnlyCoupled: StrictBool | None = None
    state: Literal["running", "paused"] | None = None
    tableFilter: Filter | None = None
    integrationTableFilter: Filter | None = None
    conflictPolicy: Literal["none", "bcWins", "dataverseWins"] | None = None
    deletionPolicy: Literal["none", "removeCoupling", "restore", "delete"] | None = None
    createNew: StrictBool | None = None
    createNewIfNoMatch: StrictBool | None = None
    syncAfterCoupling: StrictBool | None = None
    scheduleMinutes: Annotated[int, Field(strict=True, ge=1, le=1440)] | None = None

    @model_validator(mode="after")
    def _any(self) -> MappingSettingsPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one setting")
        nullable = {"tableFilter", "integrationTableFilter"}
        for name in self.model_fields_set - nullable:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        out = self.model_dump(include=self.model_fields_set, mode="json")
        return out


class _FieldSettings(_Request):
    direction: Direction | None = Field(None, strict=False)
    constant: Scalar | None = None
    transform: TransformBody | None = None
    optionMap: OptionMap | None = None
    status: Literal["enabled", "disabled"] | None = None
    useForMatch: StrictBool | None = None
    matchPriority: Annotated[int, Field(strict=True, ge=0, le=1000)] | None = None
    caseSensitive: StrictBool | None = None
    clearOnFail: StrictBool | None = None


class FieldMappingCreate(_FieldSettings):
    """``POST /api/mappings/{m}/fields``: a user-defined field mapping."""

    bc: Name | None = None
    dataverse: Name | None = None
    lookup: LookupBody | None = None

    @model_validator(mode="after")
    def _sides(self) -> FieldMappingCreate:
        if self.bc is None and self.dataverse is None:
            raise ValueError("give bc, dataverse or both")
        return self

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, mode="json")


class FieldMappingPatch(_FieldSettings):
    """``PATCH /api/mappings/{m}/fields/{id}``."""

    @model_validator(mode="after")
    def _any(self) -> FieldMappingPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of " + ", ".join(type(self).model_fields))
        for name in self.model_fields_set - {"constant", "transform", "optionMap"}:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(include=self.model_fields_set, mode="json")


class MappingCreate(_Request):
    """``POST /api/mappings``: a user-defined table mapping."""

    name: Annotated[str, Field(strict=True, pattern=r"^[A-Z0-9][A-Z0-9 -]{0,19}$")]
    bcEntity: Name
    bcApi: Annotated[str, Field(strict=True, pattern=r"^(v2\.0|[A-Za-z0-9_]{1,40}/[A-Za-z0-9_]{1,40}/v\d+\.\d+)$")] = (
        "v2.0"
    )
    dataverseTable: Name
    dataverseEntitySet: Name | None = None
    dataversePrimaryKey: Name | None = None
    direction: Direction = Field(strict=False)
    syncOnlyCoupled: StrictBool = True
    createNew: StrictBool = True
    tableFilter: Filter | None = None
    integrationTableFilter: Filter | None = None
    conflictPolicy: Literal["none", "bcWins", "dataverseWins"] = "none"
    deletionPolicy: Literal["none", "removeCoupling", "restore", "delete"] = "none"
    createNewIfNoMatch: StrictBool = False
    syncAfterCoupling: StrictBool = False
    scheduleMinutes: Annotated[int, Field(strict=True, ge=1, le=1440)] = 5
    dependsOn: Annotated[list[Annotated[str, Field(max_length=50)]], Field(max_length=20)] = []
    fields: Annotated[list[FieldMappingCreate], Field(max_length=200)] = []

    def body(self) -> dict[str, Any]:
        data = self.model_dump(exclude_none=True, mode="json", exclude={"fields"})
        data["fields"] = [f.body() for f in self.fields]
        return data


class MatchFieldBody(_Request):
    bc: Name
    dataverse: Name
    priority: Annotated[int, Field(strict=True, ge=0, le=1000)] = 0
    caseSensitive: StrictBool = False


class MatchCoupleRequest(_Request):
    """``POST /api/mappings/{m}/couplings/match`` (part 1's body plus part 2's options)."""

    bcIds: GuidList | None = None
    matchFields: Annotated[list[MatchFieldBody], Field(min_length=1, max_length=50)] | None = None
    createNewIfNoMatch: StrictBool | None = None
    syncAfter: StrictBool | None = None


# ------------------------------------------------------------------ response shapes
def field_view(f: FieldMap) -> dict[str, Any]:
    return {
        "id": f.id,
        "bc": f.bc,
        "dataverse": f.dataverse,
        "direction": f.direction.value,
        "constant": f.constant,
        "transform": f.transform.model_dump(by_alias=True, exclude_defaults=True) if f.transform else None,
        "optionMap": f.option_map,
        "lookup": f.lookup.model_dump(by_alias=True) if f.lookup else None,
        "status": f.status,
        "useForMatch": f.use_for_match,
        "matchPriority": f.match_priority,
        "caseSensitive": f.case_sensitive,
        "clearOnFail": f.clear_on_fail,
        "userDefined": f.user_defined,
        # A transform with maxLength may cut a value on its way to the target (shown, as BC's page does not).
        "cutsValues": bool(f.transform and f.transform.max_length is not None),
    }


def mapping_view(m: TableMapping, etag: str) -> dict[str, Any]:
    view = _mapping_view(m, etag)
    if m.lines is not None:  # #21 (extension): a document mapping's lines, synchronized with the header
        view["createOnce"] = m.create_once
        view["lines"] = {
            "bcEntity": m.lines.bc_entity,
            "dataverseTable": m.lines.dataverse_table,
            "dataverseEntitySet": m.lines.dataverse_entity_set,
            "dataverseParent": m.lines.dataverse_parent,
            "fields": [field_view(f) for f in m.lines.fields],
        }
    return view


def _mapping_view(m: TableMapping, etag: str) -> dict[str, Any]:
    return {
        "name": m.name,
        "bcEntity": m.bc_entity_name,
        "bcApi": m.bc_api,
        "dataverseTable": m.dataverse_table,
        "dataverseEntitySet": m.dataverse_entity_set,
        "dataversePrimaryKey": m.dataverse_primary_key,
        "direction": m.direction.value,
        "syncOnlyCoupled": m.sync_only_coupled,
        "state": m.state,
        "dependsOn": list(m.depends_on),
        "tableFilter": m.table_filter,
        "integrationTableFilter": m.integration_table_filter,
        "conflictPolicy": m.conflict_policy,
        "deletionPolicy": m.deletion_policy,
        "createNew": m.create_new,
        "createNewIfNoMatch": m.create_new_if_no_match,
        "syncAfterCoupling": m.sync_after_coupling,
        "scheduleMinutes": m.schedule_minutes,
        "userDefined": m.user_defined,
        "etag": etag,
        "fields": [field_view(f) for f in m.all_fields],
    }


REQUEST_MODELS = (
    MappingSettingsPatch,
    FieldMappingCreate,
    FieldMappingPatch,
    MappingCreate,
    MatchCoupleRequest,
)
