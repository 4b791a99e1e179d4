"""In-memory Dataverse store: tables, alternate-key indexes, a global version counter and change logs.

Per table the rows live in a dict by id, plus two ordered indexes kept as sorted lists of integers:
creation sequence (stable paging: a `$skiptoken` resumes after the last sequence with one bisect) and
`versionnumber` (change tracking: "rows changed since token n" is one bisect). Deletions are logged as
(version, id). `Store.atomic()` keeps an undo log of the previous state of every touched row so a change
set or a bulk action rolls back exactly.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

APP_USER_ID = "9c3f1b2e-5d4a-4e6f-8a7b-1c2d3e4f5a6b"
BUSINESS_UNIT_ID = "3a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ORGANIZATION_ID = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"


class DvError(Exception):
    """A Dataverse error answer: HTTP status, hex error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def not_found(logical: str, row_id: str) -> DvError:
    return DvError(404, "0x80040217", f"{logical} With Id = {row_id} Does Not Exist")


@dataclass(frozen=True)
class FieldDef:
    kind: str  # guid string int decimal datetime bool
    max_length: int | None = None
    read_only: bool = False
    # Metadata only (EntityDefinitions(...)/Attributes): the AttributeType when the kind alone does not say
    # it (Money, Picklist, State, Status, BigInt, Memo, Customer, Owner) and the RequiredLevel.
    attribute_type: str | None = None
    required: str = "None"


@dataclass(frozen=True)
class Lookup:
    """A single-valued navigation property written with `<nav>@odata.bind` and read as `_<attr>_value`."""

    attribute: str  # parentcustomerid
    nav: str  # parentcustomerid_account
    target_set: str  # accounts


@dataclass
class TableDef:
    entity_set: str
    logical: str
    primary_key: str
    fields: dict[str, FieldDef]
    alternate_keys: tuple[str, ...] = ()
    lookups: tuple[Lookup, ...] = ()
    read_only: bool = False

    @property
    def odata_type(self) -> str:
        return f"Microsoft.Dynamics.CRM.{self.logical}"


def _s(n: int, required: str = "None") -> FieldDef:
    return FieldDef("string", n, required=required)


_MONEY = FieldDef("decimal", attribute_type="Money")
_PICKLIST = FieldDef("int", attribute_type="Picklist")

_SYSTEM = {
    "statecode": FieldDef("int", attribute_type="State", required="SystemRequired"),
    "statuscode": FieldDef("int", attribute_type="Status"),
    "createdon": FieldDef("datetime", read_only=True),
    "modifiedon": FieldDef("datetime", read_only=True),
    "versionnumber": FieldDef("int", read_only=True, attribute_type="BigInt"),
}

TABLES: dict[str, TableDef] = {
    t.entity_set: t
    for t in (
        TableDef(
            "accounts",
            "account",
            "accountid",
            {
                "accountid": FieldDef("guid"),
                "name": _s(160, "ApplicationRequired"),
                "accountnumber": _s(20),
                "telephone1": _s(50),
                "emailaddress1": _s(100),
                "websiteurl": _s(200),
                "address1_line1": _s(250),
                "address1_line2": _s(250),
                "address1_city": _s(80),
                "address1_stateorprovince": _s(50),
                "address1_postalcode": _s(20),
                "address1_country": _s(80),
                "address1_freighttermscode": _PICKLIST,
                "paymenttermscode": _PICKLIST,
                "customertypecode": _PICKLIST,
                "numberofemployees": FieldDef("int"),
                "revenue": _MONEY,
                "creditlimit": _MONEY,
                "description": FieldDef("string", 2000, attribute_type="Memo"),
                **_SYSTEM,
            },
            alternate_keys=("accountnumber",),
        ),
        TableDef(
            "contacts",
            "contact",
            "contactid",
            {
                "contactid": FieldDef("guid"),
                "firstname": _s(50),
                "lastname": _s(50, "ApplicationRequired"),
                "fullname": FieldDef("string", 160, read_only=True),
                "emailaddress1": _s(100),
                "telephone1": _s(50),
                "mobilephone": _s(50),
                "jobtitle": _s(100),
                "address1_line1": _s(250),
                "address1_city": _s(80),
                "address1_postalcode": _s(20),
                "address1_country": _s(80),
                "_parentcustomerid_value": FieldDef("guid", read_only=True),
                **_SYSTEM,
            },
            lookups=(Lookup("parentcustomerid", "parentcustomerid_account", "accounts"),),
        ),
        TableDef(
            "products",
            "product",
            "productid",
            {
                "productid": FieldDef("guid"),
                "name": _s(100, "ApplicationRequired"),
                "productnumber": _s(100, "ApplicationRequired"),
                "price": _MONEY,
                "standardcost": _MONEY,
                "currentcost": _MONEY,
                "quantityonhand": FieldDef("decimal"),
                "description": FieldDef("string", 2000, attribute_type="Memo"),
                **_SYSTEM,
            },
            alternate_keys=("productnumber",),
        ),
        TableDef(
            "systemusers",
            "systemuser",
            "systemuserid",
            {
                "systemuserid": FieldDef("guid"),
                "fullname": _s(200),
                "domainname": _s(1024),
                "applicationid": FieldDef("guid"),
                "azureactivedirectoryobjectid": FieldDef("guid"),
                "isdisabled": FieldDef("bool"),
                "_businessunitid_value": FieldDef("guid", read_only=True),
                **_SYSTEM,
            },
            read_only=True,
        ),
        # A custom table (publisher prefix cr7a1), for user-defined mappings over custom BC API pages.
        TableDef(
            "cr7a1_servicesites",
            "cr7a1_servicesite",
            "cr7a1_servicesiteid",
            {
                "cr7a1_servicesiteid": FieldDef("guid"),
                "cr7a1_name": _s(100, "ApplicationRequired"),
                "cr7a1_sitenumber": _s(20),
                "cr7a1_addressline1": _s(100),
                "cr7a1_addressline2": _s(50),
                "cr7a1_city": _s(30),
                "cr7a1_capacity": FieldDef("int"),
                "cr7a1_active": FieldDef("bool"),
                "cr7a1_notes": FieldDef("string", 4000, attribute_type="Memo"),
                **_SYSTEM,
            },
        ),
    )
}


def now_iso() -> str:
    """UTC now in whole seconds, ISO 8601 with Z: what `modifiedon` carries in every Learn sample
    (e.g. "2023-05-06T10:37:01Z"), so two writes in one second share a stamp; only `versionnumber` orders them."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def normalize_guid(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


@dataclass
class TableData:
    definition: TableDef
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    seq_of: dict[str, int] = field(default_factory=dict)
    by_seq: dict[int, str] = field(default_factory=dict)
    seqs: list[int] = field(default_factory=list)
    next_seq: int = 1
    versions: list[int] = field(default_factory=list)
    by_version: dict[int, str] = field(default_factory=dict)
    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    deletions: list[tuple[int, str]] = field(default_factory=list)

    def key_of(self, name: str, value: Any) -> str | None:
        if value is None:
            return None
        return self.keys.get(name, {}).get(str(value).lower())

    def iter_from_seq(self, after_seq: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """Rows in creation order after `after_seq`, without touching the rows before it."""
        start = bisect.bisect_right(self.seqs, after_seq)
        seqs, by_seq, rows = self.seqs, self.by_seq, self.rows
        i = start
        while i < len(seqs):
            seq = seqs[i]
            yield seq, rows[by_seq[seq]]
            i += 1

    def iter_ids_from_seq(self, ids: Iterable[str], after_seq: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """The rows among ``ids`` after ``after_seq``, in creation order (a primary-key lookup, no scan)."""
        found = sorted(seq for i in ids if (seq := self.seq_of.get(i)) is not None and seq > after_seq)
        for seq in found:
            yield seq, self.rows[self.by_seq[seq]]

    def iter_versions(self, after: int, upto: int) -> Iterator[dict[str, Any]]:
        """Live rows whose versionnumber is in (after, upto], in version order."""
        i = bisect.bisect_right(self.versions, after)
        versions, by_version, rows = self.versions, self.by_version, self.rows
        while i < len(versions) and versions[i] <= upto:
            yield rows[by_version[versions[i]]]
            i += 1


@dataclass(frozen=True)
class _Undo:
    table: str
    row_id: str
    row: dict[str, Any] | None  # the row before the operation (None: it did not exist)
    seq: int | None
    deletions: int  # length of the table's deletion log before the operation


class Store:
    """All tables and the organization-wide version counter."""

    def __init__(self) -> None:
        self.version = 0
        self.min_delta_version = 0  # delta tokens below this are expired
        self.tables: dict[str, TableData] = {}
        self._undo: list[_Undo] | None = None
        self.clear()

    def clear(self) -> None:
        self.tables = {name: TableData(definition) for name, definition in TABLES.items()}
        for data in self.tables.values():
            data.keys = {k: {} for k in data.definition.alternate_keys}
        self.min_delta_version = self.version  # old delta tokens point at rows that no longer exist
        self._undo = None
        self.options = OptionSets()
        self._insert(
            "systemusers",
            {
                "systemuserid": APP_USER_ID,
                "fullname": "# local-sync-app",
                "domainname": "local-sync-app@local",
                "internalemailaddress": "local-sync-app@local",
                "isintegrationuser": True,
                "islicensed": False,
                "accessmode": 4,
                "applicationid": "00000000-0000-0000-0000-00000000a11c",
                "azureactivedirectoryobjectid": None,
                "isdisabled": False,
                "_businessunitid_value": BUSINESS_UNIT_ID,
                "statecode": 0,
                "statuscode": 1,
            },
        )
        seed_organization(self)

    # ------------------------------------------------------------------------------------------- journal
    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """All writes inside happen or none do: an exception restores every touched row. Nests."""
        outer = self._undo is None
        if outer:
            self._undo = []
        assert self._undo is not None
        mark = len(self._undo)
        try:
            yield
        except BaseException:
            self._rollback_to(mark)
            raise
        finally:
            if outer:
                self._undo = None

    def _rollback_to(self, mark: int) -> None:
        undo = self._undo
        assert undo is not None
        while len(undo) > mark:
            entry = undo.pop()
            data = self.tables[entry.table]
            if entry.row_id in data.rows:
                self._unindex(data, entry.row_id)
            if entry.row is not None and entry.seq is not None:
                self._index(data, entry.row, entry.seq)
            del data.deletions[entry.deletions :]

    def _remember(self, table: str, row_id: str) -> None:
        if self._undo is None:
            return
        data = self.tables[table]
        self._undo.append(_Undo(table, row_id, data.rows.get(row_id), data.seq_of.get(row_id), len(data.deletions)))

    # ------------------------------------------------------------------------------------------- indexes
    def _index(self, data: TableData, row: dict[str, Any], seq: int) -> None:
        row_id = row[data.definition.primary_key]
        data.rows[row_id] = row
        data.seq_of[row_id] = seq
        data.by_seq[seq] = row_id
        bisect.insort(data.seqs, seq)
        version = row["versionnumber"]
        bisect.insort(data.versions, version)
        data.by_version[version] = row_id
        for key in data.definition.alternate_keys:
            if row.get(key) is not None:
                data.keys[key][str(row[key]).lower()] = row_id

    def _unindex(self, data: TableData, row_id: str) -> None:
        row = data.rows.pop(row_id)
        seq = data.seq_of.pop(row_id)
        del data.by_seq[seq]
        del data.seqs[bisect.bisect_left(data.seqs, seq)]
        version = row["versionnumber"]
        del data.versions[bisect.bisect_left(data.versions, version)]
        del data.by_version[version]
        for key in data.definition.alternate_keys:
            if row.get(key) is not None:
                data.keys[key].pop(str(row[key]).lower(), None)

    def _next_version(self) -> int:
        self.version += 1
        return self.version

    # ------------------------------------------------------------------------------------------- writes
    def _check_keys(self, data: TableData, row: dict[str, Any], row_id: str) -> None:
        for key in data.definition.alternate_keys:
            other = data.key_of(key, row.get(key))
            if other is not None and other != row_id:
                raise DvError(412, "0x80060892", "A record with matching key values already exists.")

    def _insert(self, table: str, values: dict[str, Any]) -> dict[str, Any]:
        data = self.tables[table]
        definition = data.definition
        row_id = values.get(definition.primary_key) or str(uuid.uuid4())
        if row_id in data.rows:
            raise DvError(412, "0x80040237", "Cannot insert duplicate key.")
        row: dict[str, Any] = dict.fromkeys(definition.fields)
        row.update(statecode=0, statuscode=1)
        row.update(check_create(self, self.options, definition, values))
        row[definition.primary_key] = row_id
        _documents.check(self, definition, row, None)
        self._check_keys(data, row, row_id)
        stamp = now_iso()
        row["createdon"] = row["modifiedon"] = stamp
        row["versionnumber"] = self._next_version()
        _computed(table, row)
        self._remember(table, row_id)
        seq = data.next_seq
        data.next_seq += 1
        self._index(data, row, seq)
        after_create(self, definition, row)
        _documents.after_write(self, table, row)
        return row

    def create(self, table: str, values: dict[str, Any]) -> dict[str, Any]:
        return self._insert(table, values)

    def update(self, table: str, row_id: str, values: dict[str, Any]) -> dict[str, Any]:
        data = self.tables[table]
        old = data.rows.get(row_id)
        if old is None:
            raise not_found(data.definition.logical, row_id)
        check_update(self, self.options, data.definition, old, values)
        row = dict(old)
        row.update(values)
        row[data.definition.primary_key] = row_id
        _documents.check(self, data.definition, row, old, set(values))
        self._check_keys(data, row, row_id)
        row["modifiedon"] = now_iso()
        row["versionnumber"] = self._next_version()
        _computed(table, row)
        self._remember(table, row_id)
        seq = data.seq_of[row_id]
        self._unindex(data, row_id)
        self._index(data, row, seq)
        _documents.after_write(self, table, row)
        return row

    def delete(self, table: str, row_id: str) -> None:
        data = self.tables[table]
        if row_id not in data.rows:
            raise not_found(data.definition.logical, row_id)
        old = data.rows[row_id]
        _documents.check_delete(self, table, old)
        self._remember(table, row_id)
        self._unindex(data, row_id)
        data.deletions.append((self._next_version(), row_id))
        _documents.after_write(self, table, old, deleted=True)

    def get(self, table: str, row_id: str) -> dict[str, Any] | None:
        return self.tables[table].rows.get(row_id)


def _computed(table: str, row: dict[str, Any]) -> None:
    if table == "contacts":
        row["fullname"] = " ".join(p for p in (row.get("firstname"), row.get("lastname")) if p) or None


# Business Central's default integration set: more tables and attributes, option sets (separate module).
from local.dv_sim.default_set import (  # noqa: E402
    OptionSets,
    after_create,
    check_create,
    check_update,
    register_default_set,
    seed_organization,
)

register_default_set(TABLES)

# Sales documents (orders, invoices, their details, price lists): a separate module, registered here.
from local.dv_sim import documents as _documents  # noqa: E402  (it registers its tables in TABLES)
