"""Table mappings as versioned configuration: the YAML file, its pydantic models and validation.

A bad file fails at start-up with the file, the path inside it and the reason (``MappingConfigError``).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.domain.model import Direction

ConflictPolicy = Literal["none", "bcWins", "dataverseWins"]
DeletionPolicy = Literal["none", "removeCoupling", "restore", "delete"]


class MappingConfigError(ValueError):
    """The mapping file is invalid; the message names the file, the path and the reason."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Transform(_Model):
    """Applied to a value on its way to the other side, in this order: trim, case, cut to maxLength."""

    trim: bool = False
    case: Literal["upper", "lower"] | None = None
    max_length: int | None = Field(None, alias="maxLength", ge=1)
    # Numbers below it are written as it (BC writes a negative inventory as 0 to quantityonhand).
    minimum: float | None = None
    # Written instead of an empty value (BC gives a currency without symbol a default one).
    default: str | None = None


class Lookup(_Model):
    """A reference resolved through another mapping's couplings (contact company <-> parent account).

    BC stores the parent's ``bcKey`` (e.g. the customer number); Dataverse stores a lookup to the parent
    row, read as ``_<field>_value`` and written as ``<field>_<table>@odata.bind``."""

    mapping: str
    bc_key: str = Field("number", alias="bcKey")
    dataverse_entity_set: str = Field(alias="dataverseEntitySet")
    # The navigation property written with @odata.bind (default ``<field>_<parent table>``, the form of
    # polymorphic lookups such as parentcustomerid; single-target lookups use the attribute's own name).
    navigation: str | None = None
    # record: a Dataverse lookup; option: the parent mapping couples BC records with option values of an
    # option set, and the field carries the value; baseUnit: the base unit of the unit group the parent
    # mapping couples (a product's default unit follows its unit group).
    kind: Literal["record", "option", "baseUnit"] = "record"
    # BC's blank value stands for the company's local currency (Currency Code blank = LCY).
    blank: Literal["none", "localCurrency"] = "none"


class FieldMap(_Model):
    bc: str | None
    dataverse: str | None
    direction: Direction = Direction.BIDIRECTIONAL
    transform: Transform | None = None
    constant: Any = None
    option_map: dict[str, Any] | None = Field(None, alias="optionMap")
    lookup: Lookup | None = None
    # BC's Integration Field Mapping flags (table 5336): a disabled field is neither read nor written.
    status: Literal["enabled", "disabled"] = "enabled"
    use_for_match: bool = Field(False, alias="useForMatch")
    match_priority: int = Field(0, alias="matchPriority", ge=0, le=1000)
    case_sensitive: bool = Field(False, alias="caseSensitive")
    # A lookup that does not resolve writes an empty value instead of failing the record.
    clear_on_fail: bool = Field(False, alias="clearOnFail")
    # BC's "Not Null" (GUID fields): an empty value is not written, so a blank salesperson leaves the owner.
    not_null: bool = Field(False, alias="notNull")
    user_defined: bool = Field(False, alias="userDefined")

    @model_validator(mode="after")
    def _check(self) -> FieldMap:
        if self.bc is None and self.dataverse is None:
            raise ValueError("a field needs a bc or a dataverse name")
        if (self.bc is None or self.dataverse is None) and self.constant is None:
            raise ValueError("a field with only one side must be a constant")
        if self.constant is not None and self.direction == Direction.BIDIRECTIONAL:
            raise ValueError("a constant is written one way: set direction toDataverse or fromDataverse")
        if self.lookup is not None and (self.transform or self.option_map):
            raise ValueError("a lookup field takes no transform or optionMap")
        return self

    @cached_property  # read per field and record in every planning loop; the model is frozen
    def key(self) -> str:
        """Stable name of the field pair (used in conflicts and snapshots)."""
        return f"{self.bc or '-'}|{self.dataverse or '-'}"

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> FieldMap:
        out = super().model_copy(update=update, deep=deep)
        out.__dict__.pop("key", None)  # a copy with other names gets its own key
        return out

    @property
    def id(self) -> str:
        """The field mapping's stable, URL-safe id (``displayName~name``; ``-`` for a missing side)."""
        return field_id(self.bc, self.dataverse)

    def allows(self, direction: Direction) -> bool:
        return self.direction in (Direction.BIDIRECTIONAL, direction)


def field_id(bc: str | None, dataverse: str | None) -> str:
    return f"{bc or '-'}~{dataverse or '-'}"


class MatchField(_Model):
    bc: str
    dataverse: str
    priority: int = 1
    case_sensitive: bool = Field(False, alias="caseSensitive")


class DocumentLines(_Model):
    """The lines of a document mapping (SALESORDER-ORDER, POSTEDSALESINV-INV): synchronized with their header
    as one unit (``shared.services.documents``). A line's Dataverse row points at its header through
    ``dataverseParent`` (``salesorderid``); a BC line at its document through ``bcParentField``."""

    bc_entity: str = Field(alias="bcEntity")
    bc_parent_field: str = Field("documentId", alias="bcParentField")
    dataverse_table: str = Field(alias="dataverseTable")
    dataverse_entity_set: str = Field(alias="dataverseEntitySet")
    dataverse_primary_key: str = Field(alias="dataversePrimaryKey")
    dataverse_parent: str = Field(alias="dataverseParent")
    # The BC line type of lines with a product; other types become write-in products (description only).
    item_line_type: str = Field("Item", alias="itemLineType")
    fields: tuple[FieldMap, ...]


class TableMapping(_Model):
    name: str = Field(pattern=r"^[A-Z0-9][A-Z0-9 _-]{0,49}$")
    bc_entity: str = Field(alias="bcEntity")
    dataverse_table: str = Field(alias="dataverseTable")
    dataverse_entity_set: str = Field(alias="dataverseEntitySet")
    dataverse_primary_key: str = Field(alias="dataversePrimaryKey")
    direction: Direction
    sync_only_coupled: bool = Field(True, alias="syncOnlyCoupled")
    create_new: bool = Field(True, alias="createNew")
    table_filter: str | None = Field(None, alias="tableFilter")
    integration_table_filter: str | None = Field(None, alias="integrationTableFilter")
    conflict_policy: ConflictPolicy = Field("none", alias="conflictPolicy")
    deletion_policy: DeletionPolicy = Field("removeCoupling", alias="deletionPolicy")
    depends_on: tuple[str, ...] = Field((), alias="dependsOn")
    schedule_minutes: int = Field(5, alias="scheduleMinutes", ge=1)
    match_fields: tuple[MatchField, ...] = Field((), alias="matchFields")
    fields: tuple[FieldMap, ...]
    state: Literal["running", "paused"] = "running"
    # BC field that identifies a record besides its id; records created from Dataverse get a deterministic
    # value, so two workers creating the same row at once produce one record (the second is refused).
    bc_natural_key: str | None = Field("number", alias="bcNaturalKey")
    # BC's "Create New in Case of No Match" and "Synch. After Bulk Coupling" (match-based coupling).
    create_new_if_no_match: bool = Field(False, alias="createNewIfNoMatch")
    sync_after_coupling: bool = Field(False, alias="syncAfterCoupling")
    user_defined: bool = Field(False, alias="userDefined")
    # A document mapping: the header's lines, synchronized with it as one unit; ``createOnce``: a document is
    # created once and never updated afterwards (posted invoices).
    lines: DocumentLines | None = None
    create_once: bool = Field(False, alias="createOnce")
    # Every field mapping, disabled ones included (set by the registry; ``fields`` holds the enabled ones).
    field_catalog: tuple[FieldMap, ...] | None = Field(None, alias="fieldCatalog", exclude=True)

    @model_validator(mode="after")
    def _check(self) -> TableMapping:
        for f in self.fields:
            if self.direction != Direction.BIDIRECTIONAL and f.direction not in (self.direction,):
                if f.direction == Direction.BIDIRECTIONAL:
                    continue  # narrowed by the mapping's direction at run time
                raise ValueError(f"field {f.key}: direction {f.direction} contradicts the mapping's {self.direction}")
        return self

    def allows(self, direction: Direction) -> bool:
        """Whether a sync in ``direction`` is allowed (bidirectional allows every direction)."""
        return self.direction == Direction.BIDIRECTIONAL or self.direction == direction

    @property
    def all_fields(self) -> tuple[FieldMap, ...]:
        return self.field_catalog if self.field_catalog is not None else self.fields

    @property
    def bc_api(self) -> str:
        """``v2.0`` or a custom API route ``{publisher}/{group}/{version}`` (``bc_entity`` then carries it:
        ``contoso/sync/v1.0/widgets``, which the BC client resolves to that API's URLs)."""
        return self.bc_entity.rsplit("/", 1)[0] if "/" in self.bc_entity else "v2.0"

    @property
    def bc_entity_name(self) -> str:
        return self.bc_entity.rsplit("/", 1)[-1]

    @property
    def bc_select(self) -> list[str]:
        names = {"id", "lastModifiedDateTime"} | {f.bc for f in self.fields if f.bc and f.constant is None}
        names |= {m.bc for m in self.match_fields}
        return sorted(names)

    @property
    def dataverse_keys(self) -> list[str]:
        """The Dataverse columns that identify a row: the natural key's counterpart, then the match fields (a
        duplicate-key refusal names those the write set)."""
        natural = [f.dataverse for f in self.fields if f.bc and f.bc == self.bc_natural_key and f.dataverse]
        return list(dict.fromkeys([*natural, *(m.dataverse for m in self.match_fields)]))

    @property
    def dataverse_select(self) -> list[str]:
        names = {self.dataverse_primary_key, "modifiedon"}
        for f in self.fields:
            if f.dataverse and f.constant is None:
                names.add(f"_{f.dataverse}_value" if f.lookup and f.lookup.kind != "option" else f.dataverse)
        names |= {m.dataverse for m in self.match_fields}
        return sorted(names)


class MappingFile(_Model):
    version: Literal[1]
    mappings: tuple[TableMapping, ...]

    @model_validator(mode="after")
    def _check(self) -> MappingFile:
        names = [m.name for m in self.mappings]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate mapping names: {sorted(dupes)}")
        for m in self.mappings:
            for dep in m.depends_on:
                if dep not in names:
                    raise ValueError(f"mapping {m.name} depends on unknown mapping {dep}")
            for f in (*m.fields, *(m.lines.fields if m.lines else ())):
                if f.lookup and f.lookup.mapping not in names:
                    raise ValueError(f"mapping {m.name} field {f.key} looks up unknown mapping {f.lookup.mapping}")
        dependency_order(self.mappings)  # raises on cycles
        return self


# BC's GetPrioritizedMappingList: users, currency, units, customers, vendors, contacts, items, the rest.
BC_PRIORITY = ("SALESPEOPLE", "CURRENCY", "UNIT OF MEASURE", "CUSTOMER", "VENDOR", "CONTACT", "ITEM-PRODUCT")


def dependency_order(mappings: tuple[TableMapping, ...] | list[TableMapping]) -> list[TableMapping]:
    """Parents first (a child's lookups need the parent's couplings), otherwise in BC's prioritized order,
    then in the given order; raises ValueError on a cycle."""
    mappings = sorted(mappings, key=lambda m: BC_PRIORITY.index(m.name) if m.name in BC_PRIORITY else len(BC_PRIORITY))
    by_name = {m.name: m for m in mappings}
    done: dict[str, TableMapping] = {}
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            raise ValueError(f"dependency cycle through mapping {name}")
        visiting.add(name)
        for dep in by_name[name].depends_on:
            visit(dep)
        visiting.discard(name)
        done[name] = by_name[name]

    for m in mappings:
        visit(m.name)
    return list(done.values())


def load_mapping_file(path: str | Path) -> MappingFile:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise MappingConfigError(f"{path}: cannot read: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise MappingConfigError(f"{path}: not valid YAML: {e}") from e
    try:
        return MappingFile.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = _describe_path(raw, first["loc"])
        raise MappingConfigError(f"{path}: {where}: {first['msg']}") from e


def _describe_path(raw: Any, loc: tuple[Any, ...]) -> str:
    """``mappings[1] (CONTACT).fields[2].direction`` from a pydantic error location."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            node = node[item] if isinstance(node, list) and item < len(node) else None
            if isinstance(node, dict) and node.get("name"):
                label += f" ({node['name']})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(root)"
