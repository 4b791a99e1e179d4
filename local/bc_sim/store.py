"""In-memory data of the Business Central simulator: tables with sorted indexes, ETags, a strictly
increasing ``lastModifiedDateTime`` clock, number series and an undo log for transactional ``$batch``."""

from __future__ import annotations

import base64
import re
import time
import uuid
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from local.bc_sim.default_set import check_relations, seed_company
from local.bc_sim.entities import COMPANIES, SCHEMAS, EntitySchema

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# Fields kept in sorted indexes: (value, id) lists, so paging by them resumes with a bisect.

ChangeListener = Callable[[str, str, str, str, str], None]  # company id, entity, row id, changeType, lmdt


class BCError(Exception):
    """An error answered in BC's shape: ``{"error": {"code": code, "message": message}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def not_found(what: str) -> BCError:
    return BCError(404, "BadRequest_NotFound", f"The {what} does not exist. Identification fields and values: ...")


def format_ms(ms: int) -> str:
    """Milliseconds since the epoch -> BC's ``2026-11-25T09:12:03.123Z``."""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class Clock:
    """UTC milliseconds, strictly increasing across calls so watermarks on lastModifiedDateTime are reliable."""

    def __init__(self) -> None:
        self.last_ms = 0

    def next(self) -> str:
        self.last_ms = max(int(time.time() * 1000), self.last_ms + 1)
        return format_ms(self.last_ms)


@dataclass
class Table:
    schema: EntitySchema
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_number: dict[str, str] = field(default_factory=dict)
    index: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    next_number: int = 0

    def __post_init__(self) -> None:
        self.next_number = self.schema.series.start
        # Code tables (currencies, paymentTerms, ...) are keyed by ``code`` instead of ``number``.
        self.index = {f: [] for f in self.indexed}

    @property
    def key(self) -> str:
        return self.schema.key

    @property
    def indexed(self) -> tuple[str, str]:
        return (self.schema.key, "lastModifiedDateTime")

    def put(self, row: dict[str, Any]) -> None:
        rid = row["id"]
        self.rows[rid] = row
        self.by_number[row[self.key]] = rid
        for name in self.indexed:
            entry = (row[name], rid)
            lst = self.index[name]
            if not lst or lst[-1] < entry:  # the common case (new rows, fresh timestamps): O(1)
                lst.append(entry)
            else:
                insort(lst, entry)

    def remove(self, rid: str) -> dict[str, Any]:
        row = self.rows.pop(rid)
        if self.by_number.get(row[self.key]) == rid:
            del self.by_number[row[self.key]]
        for name in self.indexed:
            lst = self.index[name]
            entry = (row[name], rid)
            if lst and lst[-1] == entry:
                lst.pop()
            else:
                i = bisect_left(lst, entry)
                if i < len(lst) and lst[i] == entry:
                    del lst[i]
        return row

    def take_number(self) -> str:
        series = self.schema.series
        while True:
            candidate = series.format(self.next_number)
            self.next_number += series.step
            if candidate not in self.by_number:
                return candidate


class Store:
    """All companies' tables. Every write stamps a new ETag and lastModifiedDateTime and tells the
    change listener (buffered while a transaction is open, dropped on rollback)."""

    def __init__(self, listener: ChangeListener | None = None) -> None:
        self.listener = listener
        self.clock = Clock()
        self._etag_counter = 0
        self.companies: dict[str, dict[str, Any]] = {}
        self.tables: dict[tuple[str, str], Table] = {}
        self._undo: list[Callable[[], None]] | None = None
        self._pending: list[tuple[str, str, str, str, str]] = []
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        self.companies = {c["id"]: dict(c) for c in COMPANIES}
        self.tables = {(cid, name): Table(schema) for cid in self.companies for name, schema in SCHEMAS.items()}
        self._undo = None
        self._pending = []
        for cid, company in self.companies.items():
            seed_company(self, cid, company["displayName"])

    def table(self, company_id: str, entity: str) -> Table:
        company = self.company(company_id)
        return self.tables[(company["id"], entity)]

    def company(self, company_id: str) -> dict[str, Any]:
        company = self.companies.get(company_id.lower())
        if company is None:
            raise not_found("company")
        return company

    def new_etag(self) -> str:
        self._etag_counter += 1
        digits = str(10**19 + self._etag_counter * 7919)  # opaque-looking, unique per write
        raw = f"'{len(digits)};{digits};00;'".encode()
        return 'W/"' + base64.b64encode(raw).decode() + '"'

    # ------------------------------------------------------------------ transactions
    def begin(self) -> None:
        self._undo = []
        self._pending = []

    def commit(self) -> None:
        self._undo = None
        pending, self._pending = self._pending, []
        for change in pending:
            self._emit(*change)

    def rollback(self) -> None:
        undo, self._undo = self._undo or [], None
        for step in reversed(undo):
            step()
        self._pending = []

    def _notify(self, company_id: str, entity: str, rid: str, change: str, lmdt: str) -> None:
        if self._undo is not None:
            self._pending.append((company_id, entity, rid, change, lmdt))
        else:
            self._emit(company_id, entity, rid, change, lmdt)

    def _emit(self, company_id: str, entity: str, rid: str, change: str, lmdt: str) -> None:
        if self.listener is not None:
            self.listener(company_id, entity, rid, change, lmdt)

    def _record_undo(self, step: Callable[[], None]) -> None:
        if self._undo is not None:
            self._undo.append(step)

    # ------------------------------------------------------------------ reads
    def get(self, company_id: str, entity: str, rid: str) -> dict[str, Any]:
        row = self.table(company_id, entity).rows.get(rid.lower())
        if row is None:
            raise not_found(entity[:-1])
        return row

    def iter_rows(self, company_id: str, entity: str) -> Iterator[dict[str, Any]]:
        return iter(self.table(company_id, entity).rows.values())

    # ------------------------------------------------------------------ writes
    def create(self, company_id: str, entity: str, body: Mapping[str, Any]) -> dict[str, Any]:
        table = self.table(company_id, entity)
        values = self._validate(table, body, creating=True)
        if entity in NAME_REQUIRED_ON_CREATE and not str(values.get("displayName") or "").strip():
            # APIV2 pages 30009/30071 OnInsertRecord: Error(NotProvidedCustomerNameErr / NotProvidedContactNameErr).
            raise BCError(400, "Application_DialogException", 'A "displayName" must be provided.')
        rid = str(values.pop("id", None) or uuid.uuid4()).lower()
        if rid in table.rows:
            raise BCError(400, "Internal_EntityWithSameKeyExists", f"The record with id '{rid}' already exists.")
        number = values.pop(table.key, None)
        saved_next = table.next_number
        if number:
            if number in table.by_number:
                raise _duplicate(entity, number)
        elif table.key == "id" and entity in _documents.HEADER_OF:
            number = rid  # document lines: keyed by their id (SystemId)
        elif table.key == "id":
            raise BCError(405, "BadRequest_MethodNotAllowed", f"'POST' is not allowed on {entity}.")
        elif table.key != "number":
            # A code table's primary key is the code; BC refuses a record without it.
            raise BCError(400, "BadRequest", f"The field {table.key} of table {entity} must have a value.")
        else:
            number = table.take_number()
        row: dict[str, Any] = {"@odata.etag": "", "id": rid, table.key: number}
        row.update(table.schema.defaults)
        row.update(values)
        self._derive(company_id, table, row)
        check_relations(self, company_id, entity, row, set(values))
        _documents.before_write(self, company_id, entity, None, row, set(values))
        row["@odata.etag"] = self.new_etag()
        row["lastModifiedDateTime"] = self.clock.next()
        table.put(row)

        def undo() -> None:
            table.remove(rid)
            table.next_number = saved_next

        self._record_undo(undo)
        self._notify(self.company(company_id)["id"], entity, rid, "created", row["lastModifiedDateTime"])
        _documents.after_write(self, company_id, entity, row)
        return row

    def update(
        self, company_id: str, entity: str, rid: str, body: Mapping[str, Any], if_match: str | None
    ) -> dict[str, Any]:
        table = self.table(company_id, entity)
        old = self.get(company_id, entity, rid)
        check_etag(old, if_match)
        values = self._validate(table, body, creating=False)
        values.pop("id", None)
        number = values.get(table.key)
        if number is not None and number != old[table.key] and number in table.by_number:
            raise _duplicate(entity, number)
        row = dict(old)
        row.update(values)
        self._derive(company_id, table, row)
        check_relations(self, company_id, entity, row, set(values))
        _documents.before_write(self, company_id, entity, old, row, set(values))
        row["@odata.etag"] = self.new_etag()
        row["lastModifiedDateTime"] = self.clock.next()
        table.remove(old["id"])
        table.put(row)

        def undo() -> None:
            table.remove(row["id"])
            table.put(old)

        self._record_undo(undo)
        self._notify(self.company(company_id)["id"], entity, row["id"], "updated", row["lastModifiedDateTime"])
        _documents.after_write(self, company_id, entity, row)
        return row

    def delete(self, company_id: str, entity: str, rid: str, if_match: str | None) -> None:
        table = self.table(company_id, entity)
        old = self.get(company_id, entity, rid)
        check_etag(old, if_match)
        _documents.before_delete(self, company_id, entity, old)
        table.remove(old["id"])
        self._record_undo(lambda: table.put(old))
        self._notify(self.company(company_id)["id"], entity, old["id"], "deleted", self.clock.next())
        _documents.after_write(self, company_id, entity, old, deleted=True)

    def seed(self, company_id: str, entity: str, count: int, prefix: str, fields: Mapping[str, Any]) -> list[str]:
        """Create ``count`` rows without HTTP (demo data, benchmarks). Returns their ids."""
        if entity in _documents.LINES_OF:  # documents come with lines (released orders, posted invoices)
            return _documents.seed(self, company_id, entity, count, fields)
        table = self.table(company_id, entity)
        constant = self._validate(table, fields, creating=True)
        constant.pop("id", None)
        constant.pop(table.key, None)
        ids: list[str] = []
        for _ in range(count):
            number = table.take_number()
            values: dict[str, Any] = {}
            if "displayName" in table.schema.fields:
                values["displayName"] = f"{prefix} {number}"
            if "email" in table.schema.fields:
                slug = re.sub(r"[^a-z0-9]+", "", prefix.lower()) or "demo"
                values["email"] = f"{slug}.{number.lower()}@example.com"
            if entity == "items":
                values["unitPrice"] = round(10 + (len(ids) % 90) * 1.5, 2)
            values.update(constant)
            row = self.create(company_id, entity, {table.key: number, **values})
            ids.append(row["id"])
        return ids

    # ------------------------------------------------------------------ validation
    def _validate(self, table: Table, body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
        schema = table.schema
        values: dict[str, Any] = {}
        for key, value in body.items():
            if key.startswith("@"):
                continue  # annotations such as @odata.etag echoed back by clients
            if key not in schema.fields:
                raise BCError(
                    400,
                    "BadRequest",
                    f"The property '{key}' does not exist on type 'Microsoft.NAV.{schema.name[:-1]}'.",
                )
            if key == "id":
                if creating and value is not None:
                    if not isinstance(value, str) or not GUID_RE.match(value):
                        raise BCError(400, "BadRequest", f"Invalid value '{value}' for property 'id'.")
                    values["id"] = value.lower()
                continue
            if key in schema.read_only:
                continue  # BC ignores read-only properties it returned itself
            default = schema.defaults.get(key, "")
            values[key] = _check_type(schema, key, value, default)
        return values

    def _derive(self, company_id: str, table: Table, row: dict[str, Any]) -> None:
        if table.schema.name != "contacts":
            return
        if row.get("companyNumber"):
            contacts = self.table(company_id, "contacts")
            cid = contacts.by_number.get(row["companyNumber"])
            company = contacts.rows.get(cid) if cid else None
            if company is None or company["type"] != "Company":
                raise BCError(
                    400,
                    "Internal_RecordNotFound",
                    f"The Contact does not exist. Identification fields and values: No.='{row['companyNumber']}'",
                )
            row["companyName"] = company["displayName"]
        elif row["type"] == "Company":
            row["companyNumber"] = row["number"]
            row["companyName"] = row["displayName"]
        else:
            row["companyName"] = ""


def _duplicate(entity: str, number: str) -> BCError:
    return BCError(
        400,
        "Internal_EntityWithSameKeyExists",
        f"The record in table {entity[:-1].capitalize()} already exists. Identification fields and values: "
        f"No.='{number}'",
    )


def _check_type(schema: EntitySchema, key: str, value: Any, default: Any) -> Any:
    def bad(kind: str) -> BCError:
        return BCError(400, "BadRequest", f"Cannot convert the literal '{value}' to the expected type '{kind}'.")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("Edm.Boolean")
        return value
    if isinstance(default, int | float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise bad("Edm.Decimal")
        return value
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise bad("Edm.String")
    limit = schema.max_length.get(key)
    if limit is not None and len(value) > limit:
        raise BCError(
            400,
            "Application_StringExceedsLength",
            f"The length of the string is {len(value)}, but it must be less than or equal to {limit} characters. "
            f"Value: {value}",
        )
    allowed = schema.enums.get(key)
    if allowed is not None:
        if key == "blocked" and value in ("", " "):
            value = allowed[0]
        if value not in allowed:
            raise BCError(400, "BadRequest", f"The value '{value}' is not valid for property '{key}'.")
    return value


NAME_REQUIRED_ON_CREATE = frozenset({"customers", "contacts"})


def check_etag(row: Mapping[str, Any], if_match: str | None) -> None:
    """``If-Match`` check: None means the caller decided no header is fine; ``*`` matches anything."""
    if if_match is None:
        return
    tags = [t.strip() for t in if_match.split(",")]
    if "*" in tags or row["@odata.etag"] in tags:
        return
    # Learn's BC error table: Request_EntityChanged comes from an ODataConflictException, i.e. HTTP 409
    # (the stricter reading; REAL-SERVICES.md ranks it second).
    raise BCError(
        409,
        "Request_EntityChanged",
        "Could not save the changes because the record was changed by another user or process. Refresh and try again.",
    )


# Sales documents (headers with lines, bound actions): a separate module, registered here.
from local.bc_sim import documents as _documents  # noqa: E402
from local.bc_sim.entities import SCHEMAS as _SCHEMAS  # noqa: E402

_documents.register(_SCHEMAS)
