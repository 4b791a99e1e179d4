"""The Dataverse Web API v9.2 operations on the in-memory store, independent of aiohttp.

`DataverseService.execute(DvRequest) -> DvResponse` serves one request (top level or one part of a
`$batch`); every failure is a `DvError` rendered as `{"error": {"code": "0x...", "message": ...}}`.
"""

from __future__ import annotations

import bisect
import json
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from multidict import CIMultiDict, MultiDict

from local.dv_sim.documents import state_codes
from local.dv_sim.store import (
    APP_USER_ID,
    BUSINESS_UNIT_ID,
    ORGANIZATION_ID,
    DvError,
    FieldDef,
    Store,
    TableData,
    TableDef,
    normalize_guid,
    not_found,
)
from local.odata import (
    ODataError,
    decode_skiptoken,
    encode_skiptoken,
    parse_filter,
    parse_maxpagesize,
    parse_orderby,
    parse_select,
    sort_key,
)

API_PREFIX = "/api/data/v9.2"
MAX_PAGE_SIZE = 5000
MAX_BULK = 1000
BULK_ACTIONS = ("CreateMultiple", "UpdateMultiple", "UpsertMultiple")

_PATH = re.compile(r"^(?P<set>[A-Za-z_][A-Za-z0-9_]*)(?:\((?P<key>.*)\))?(?:/(?P<action>[A-Za-z0-9_.]+|\$count))?$")
_KEY_PAIR = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^']|'')*'|[^,]+)\s*(?:,|$)")
_BIND = re.compile(r"(?:^|/)([A-Za-z_][A-Za-z0-9_]*)\(([^)]*)\)$")
_ETAG = re.compile(r'^(?:W/)?"?(\d+)"?$')


@dataclass
class DvRequest:
    method: str
    path: str  # below /api/data/v9.2/, URL-decoded, e.g. "accounts(accountnumber='C1')"
    query: MultiDict[str]
    headers: CIMultiDict[str]
    body: bytes
    base: str  # "http://127.0.0.1:7082"


@dataclass
class DvResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def error_json(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# Query options the simulator evaluates. Anything else is refused, never silently ignored (a silently
# ignored $filter-like option returns every row; REAL-SERVICES.md ranks lenient parsing 8th).
_COLLECTION_OPTIONS = frozenset({"$select", "$filter", "$orderby", "$top", "$count", "$skiptoken", "$deltatoken"})
_ENTITY_OPTIONS = frozenset({"$select"})
# Supported by the real Web API, not simulated: refused with a message saying so (docs/simulators.md).
_NOT_SIMULATED = frozenset({"$expand", "$apply", "fetchXml", "savedQuery", "userQuery"})
_NOT_SIMULATED_LOWER = frozenset(n.lower() for n in _NOT_SIMULATED)


def _check_query_options(query: Mapping[str, str], *, collection: bool) -> None:
    allowed = _COLLECTION_OPTIONS if collection else _ENTITY_OPTIONS
    for name in query:
        if name in allowed:
            continue
        if name in _NOT_SIMULATED:
            raise bad_request(f"The query option '{name}' is not supported by this simulator.")
        if name.startswith("$") or name.lower() in _NOT_SIMULATED_LOWER:
            raise bad_request(f"The query parameter {name} is not supported.")


# The real code is undocumented (REAL-SERVICES.md §3); the message names the cause, which clients match.
CHANGE_TRACKING_OFF = "0x80044352"


def bad_request(message: str, code: str = "0x80060888") -> DvError:
    return DvError(400, code, message)


def payload_error(message: str) -> DvError:
    return DvError(400, "0x80048d19", message)


def route_key_of(path: str) -> str:
    """byRoute key of a path below the API prefix: entity set, `$batch`, `WhoAmI` or the bound action."""
    match = _PATH.match(path)
    if match is None:
        return path.split("/", 1)[0] or "root"
    action = match.group("action")
    if action:
        return action.rsplit(".", 1)[-1]
    return match.group("set").removesuffix("()") if match.group("set") else path


def _prefer(headers: Mapping[str, str]) -> set[str]:
    return {p.strip().lower() for value in headers.getall("Prefer", []) for p in value.split(",")}  # type: ignore[attr-defined]


def _etag(row: Mapping[str, Any]) -> str:
    return f'W/"{row["versionnumber"]}"'


def _etag_matches(header: str, row: Mapping[str, Any]) -> bool:
    if header.strip() == "*":
        return True
    for candidate in header.split(","):
        match = _ETAG.match(candidate.strip())
        if match and int(match.group(1)) == row["versionnumber"]:
            return True
    return False


class DataverseService:
    def __init__(
        self, store: Store, *, bulk_unsupported: Iterable[str] = ("systemusers",), untracked: Iterable[str] = ()
    ) -> None:
        self.store = store
        self.bulk_unsupported = set(bulk_unsupported)
        self.bulk_rows = 0  # rows bulk operations ($batch parts, *Multiple targets) wrote: charged per row (limits)
        # Change tracking is a per-table setting in Dataverse (Learn "Use change tracking to synchronize data
        # with external systems"); tables listed here have it off, and a track-changes read is refused.
        self.untracked = set(untracked)

    # ------------------------------------------------------------------------------------------- dispatch
    def execute(self, req: DvRequest) -> DvResponse:
        try:
            return self._dispatch(req)
        except DvError as exc:
            return DvResponse(exc.status, error_json(exc.code, exc.message))
        except ODataError as exc:
            return DvResponse(400, error_json("0x80060888", exc.message))

    def _dispatch(self, req: DvRequest) -> DvResponse:
        path = req.path.strip("/")
        if path in ("WhoAmI", "WhoAmI()"):
            if req.method != "GET":
                raise DvError(405, "0x80060888", "The HTTP method is not allowed for WhoAmI.")
            return DvResponse(
                200,
                {
                    "@odata.context": f"{req.base}{API_PREFIX}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                    "BusinessUnitId": BUSINESS_UNIT_ID,
                    "UserId": APP_USER_ID,
                    "OrganizationId": ORGANIZATION_ID,
                },
            )
        from local.dv_sim.default_set import serve_metadata  # option sets: reads and InsertOptionValue

        option_answer = serve_metadata(self.store.options, req.method, path, req.body, req.query)
        if option_answer is not None:
            return DvResponse(200, option_answer)
        match = _PATH.match(path)
        if match is not None and match.group("set") == "EntityDefinitions":
            from local.dv_sim import metadata  # the metadata endpoints, generated from the table definitions

            tables = [t.definition for t in self.store.tables.values()]
            body = metadata.serve(
                tables, req.method, match.group("key"), match.group("action"), req.query, f"{req.base}{API_PREFIX}"
            )
            return DvResponse(200, body)
        data = self.store.tables.get(match.group("set")) if match else None
        if match is None or data is None:
            raise DvError(404, "0x8006088a", f"Resource not found for the segment '{path.split('/')[0]}'.")
        key, action = match.group("key"), match.group("action")
        if action == "$count" and key is None and req.method == "GET":
            return self._count(req, data)
        if action:
            name = action.rsplit(".", 1)[-1]
            if key is not None or name not in BULK_ACTIONS or req.method != "POST":
                raise DvError(404, "0x8006088a", f"Resource not found for the segment '{action}'.")
            return self._bulk(req, data, name)
        if req.method == "GET":
            _check_query_options(req.query, collection=key is None)
        if key is None:
            if req.method == "GET":
                return self._list(req, data)
            if req.method == "POST":
                return self._create(req, data)
            raise DvError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed on a collection.")
        row_id, key_values = self._resolve_key(data, key)
        if req.method == "GET":
            return self._get(req, data, row_id, key)
        if req.method == "PATCH":
            return self._patch(req, data, row_id, key_values, key)
        if req.method == "DELETE":
            return self._delete(req, data, row_id, key)
        raise DvError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed on an entity.")

    # ------------------------------------------------------------------------------------------- helpers
    def _resolve_key(self, data: TableData, key: str) -> tuple[str | None, dict[str, Any]]:
        """(existing row id or None, the key's values to use when an upsert creates the row)."""
        definition = data.definition
        guid = normalize_guid(key.strip().strip("'"))
        if guid is not None and "=" not in key:
            return (guid if guid in data.rows else None), {definition.primary_key: guid}
        pairs = _KEY_PAIR.findall(key)
        if not pairs:
            raise bad_request(f"The key '{key}' is not valid for {definition.logical}.")
        values: dict[str, Any] = {}
        for name, raw in pairs:
            if name == definition.primary_key:
                values[name] = normalize_guid(raw.strip("'"))
                continue
            if name not in definition.alternate_keys:
                raise bad_request(
                    f"The key attribute '{name}' is not an alternate key of entity '{definition.logical}'."
                )
            values[name] = raw[1:-1].replace("''", "'") if raw.startswith("'") else raw
        if definition.primary_key in values:
            row_id = values[definition.primary_key]
            if row_id is None:
                raise bad_request(f"The key '{key}' is not a valid GUID.")
            return (row_id if row_id in data.rows else None), {definition.primary_key: row_id}
        if set(values) != set(definition.alternate_keys):
            raise bad_request(f"The key '{key}' does not name every attribute of an alternate key.")
        name = definition.alternate_keys[0]
        return data.key_of(name, values[name]), values

    def _row_json(self, data: TableData, row: Mapping[str, Any], select: list[str] | None) -> dict[str, Any]:
        out: dict[str, Any] = {"@odata.etag": _etag(row)}
        names = select if select is not None else data.definition.fields
        for name in names:
            out[name] = row.get(name)
        out[data.definition.primary_key] = row[data.definition.primary_key]
        return out

    def _entity_url(self, req: DvRequest, data: TableData, row_id: str) -> str:
        return f"{req.base}{API_PREFIX}/{data.definition.entity_set}({row_id})"

    def _context(self, req: DvRequest, data: TableData, select: list[str] | None, suffix: str = "") -> str:
        shape = f"({','.join(select)})" if select else ""
        return f"{req.base}{API_PREFIX}/$metadata#{data.definition.entity_set}{shape}{suffix}"

    def _json_body(self, req: DvRequest) -> dict[str, Any]:
        try:
            body = json.loads(req.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise payload_error(f"Error identified in Payload provided by the user: {exc}") from exc
        if not isinstance(body, dict):
            raise payload_error("Error identified in Payload provided by the user: a JSON object is expected.")
        return body

    def values_from(self, data: TableData, body: Mapping[str, Any], *, seeding: bool = False) -> dict[str, Any]:
        """Validate a request body's properties and turn `@odata.bind`s into `_x_value` attributes."""
        definition = data.definition
        values: dict[str, Any] = {}
        for name, value in body.items():
            if name == "@odata.type":
                if str(value).lstrip("#") != definition.odata_type:
                    raise payload_error(f"The @odata.type '{value}' does not match '{definition.odata_type}'.")
                continue
            if name.endswith("@odata.bind"):
                values.update(self._bind(definition, name.removesuffix("@odata.bind"), value))
                continue
            if name.startswith("@") or "@" in name:
                continue  # other instance annotations are ignored, as Dataverse does
            fdef = definition.fields.get(name)
            if fdef is None or (fdef.read_only and not seeding):
                raise payload_error(f"Invalid property '{name}' was found in entity '{definition.odata_type}'.")
            values[name] = _check_value(definition, name, fdef, value)
        return values

    def _bind(self, definition: TableDef, nav: str, value: Any) -> dict[str, Any]:
        lookup = next((lk for lk in definition.lookups if lk.nav == nav), None)
        if lookup is None:
            raise payload_error(
                f"An undeclared property '{nav}' which only has property annotations in the payload but no "
                f"property value was found in the payload."
            )
        attribute = f"_{lookup.attribute}_value"
        if value is None:
            return {attribute: None}
        match = _BIND.search(str(value)) if isinstance(value, str) else None
        if match is None or match.group(1) != lookup.target_set:
            raise payload_error(f"The @odata.bind value '{value}' of '{nav}' must be '/{lookup.target_set}(<id>)'.")
        target = self.store.tables[lookup.target_set]
        target_id, _ = self._resolve_key(target, urllib.parse.unquote(match.group(2)))
        if target_id is None:
            raise DvError(400, "0x80040217", f"{target.definition.logical} With Id = {match.group(2)} Does Not Exist")
        return {attribute: target_id}

    # ------------------------------------------------------------------------------------------- reads
    def _get(self, req: DvRequest, data: TableData, row_id: str | None, key: str) -> DvResponse:
        select = parse_select(req.query.get("$select"), fields=data.definition.fields)
        row = self.store.get(data.definition.entity_set, row_id) if row_id else None
        if row is None:
            raise not_found(data.definition.logical, key)
        if_none = req.headers.get("If-None-Match")
        if if_none and if_none.strip() != "*" and _etag_matches(if_none, row):
            return DvResponse(304)
        body = {"@odata.context": self._context(req, data, select, "/$entity"), **self._row_json(data, row, select)}
        return DvResponse(200, body, {"ETag": _etag(row)})

    def _count(self, req: DvRequest, data: TableData) -> DvResponse:
        """``GET <set>/$count[?$filter=…]``: the number as plain text, at most 5,000 (Learn "Query data using
        the Web API", Count number of rows)."""
        for name in req.query:
            if name != "$filter":
                raise bad_request(f"The query parameter {name} is not supported with /$count.")
        q = req.query
        predicate = (
            parse_filter(q["$filter"], fields=data.definition.fields, case_insensitive=True, dialect="dataverse")
            if "$filter" in q
            else None
        )
        count = sum(1 for r in data.rows.values() if predicate is None or predicate(r))
        return DvResponse(200, str(min(count, 5000)), {"Content-Type": "text/plain"})

    def _list(self, req: DvRequest, data: TableData) -> DvResponse:
        definition, q = data.definition, req.query
        fields = definition.fields
        select = parse_select(q.get("$select"), fields=fields)
        prefer = _prefer(req.headers)
        page_size = min(parse_maxpagesize(req.headers.get("Prefer")) or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        applied: list[str] = []
        if parse_maxpagesize(req.headers.get("Prefer")):
            applied.append(f"odata.maxpagesize={page_size}")
        track = "odata.track-changes" in prefer
        if (track or "$deltatoken" in q) and definition.entity_set in self.untracked:
            raise bad_request(
                f"Change tracking is not enabled for the entity '{definition.logical}'.", CHANGE_TRACKING_OFF
            )
        if "$deltatoken" in q:
            return self._delta(req, data, select, page_size, applied)
        state = decode_skiptoken(q["$skiptoken"]) if "$skiptoken" in q else {}
        if track or "t" in state:
            if "$filter" in q or "$orderby" in q or "$top" in q:
                raise bad_request("Change tracking does not support $filter, $orderby or $top.", "0x80044351")
            applied.append("odata.track-changes")
        # Dataverse compares text ignoring case (its SQL collation): 'ACME' eq 'acme'.
        predicate = (
            parse_filter(q["$filter"], fields=fields, case_insensitive=True, dialect="dataverse")
            if "$filter" in q
            else None
        )
        orderby = parse_orderby(q.get("$orderby"), fields=fields)
        top: int | None = None
        if "$top" in q:
            if not q["$top"].isdigit():
                raise bad_request(f"Invalid value '{q['$top']}' for $top.")
            top = min(int(q["$top"]), MAX_PAGE_SIZE)
        limit = top if top is not None else page_size

        rows: list[dict[str, Any]]
        more: bool
        next_state: dict[str, Any] = {}
        if not orderby:
            after_seq = int(state.get("s", 0))
            # The predicate still decides; a leading primary-key In only narrows which rows it looks at.
            ids = _leading_key_in(q.get("$filter"), definition.primary_key)
            source = data.iter_from_seq(after_seq) if ids is None else data.iter_ids_from_seq(ids, after_seq)
            rows, more, last = _take(source, predicate, limit)
            next_state = {"s": last}
        elif len(orderby) == 1 and orderby[0][0] in ("modifiedon", "versionnumber") and not orderby[0][1]:
            # Version order is kept as an index: resume after the last version seen, no sort, no full scan.
            after = int(state.get("v", 0))
            source = ((row["versionnumber"], row) for row in data.iter_versions(after, self.store.version))
            rows, more, last = _take(source, predicate, limit)
            next_state = {"v": last}
        else:
            # Any other order needs every match sorted; documented as O(n log n) per page.
            matching = [row for row in data.rows.values() if predicate is None or predicate(row)]
            for name, descending in reversed(orderby):
                matching.sort(key=lambda r, n=name: sort_key(r.get(n)), reverse=descending)
            offset = int(state.get("o", 0))
            rows = matching[offset : offset + limit]
            more = offset + limit < len(matching)
            next_state = {"o": offset + limit}

        body: dict[str, Any] = {"@odata.context": self._context(req, data, select)}
        if q.get("$count", "").lower() == "true":
            body["@odata.count"] = sum(1 for r in data.rows.values() if predicate is None or predicate(r))
        body["value"] = [self._row_json(data, row, select) for row in rows]
        if more and top is None:
            if track or "t" in state:
                next_state["t"] = state.get("t", self.store.version)
            body["@odata.nextLink"] = self._link(req, {"$skiptoken": encode_skiptoken(next_state)})
        elif track or "t" in state:
            token = state.get("t", self.store.version)
            body["@odata.deltaLink"] = self._delta_link(req, data, select, token)
        headers = {"Preference-Applied": ",".join(applied)} if applied else {}
        return DvResponse(200, body, headers)

    def _link(self, req: DvRequest, replace: Mapping[str, str]) -> str:
        params = [(k, v) for k, v in req.query.items() if k not in replace]
        params.extend(replace.items())
        query = urllib.parse.urlencode(params, safe="$(),'=:", quote_via=urllib.parse.quote)
        return f"{req.base}{API_PREFIX}/{req.path.strip('/')}?{query}"

    def _delta_link(self, req: DvRequest, data: TableData, select: list[str] | None, token: int) -> str:
        params = [("$select", ",".join(select))] if select else []
        params.append(("$deltatoken", str(token)))
        query = urllib.parse.urlencode(params, safe="$,", quote_via=urllib.parse.quote)
        return f"{req.base}{API_PREFIX}/{data.definition.entity_set}?{query}"

    def _delta(
        self, req: DvRequest, data: TableData, select: list[str] | None, page_size: int, applied: list[str]
    ) -> DvResponse:
        raw = req.query["$deltatoken"]
        since = int(raw) if raw.isdigit() else -1
        if since < self.store.min_delta_version or since > self.store.version:
            raise bad_request(
                "Version stamp associated with the client has expired. Please perform a full sync.", "0x80044352"
            )
        state = decode_skiptoken(req.query["$skiptoken"]) if "$skiptoken" in req.query else {}
        upto = int(state.get("u", self.store.version))
        after = int(state.get("v", since))
        source = ((row["versionnumber"], row) for row in data.iter_versions(after, upto))
        rows, more, last = _take(source, None, page_size)
        body: dict[str, Any] = {
            "@odata.context": self._context(req, data, select, "/$delta"),
            "value": [self._row_json(data, row, select) for row in rows],
        }
        if more:
            token = encode_skiptoken({"u": upto, "v": last})
            body["@odata.nextLink"] = self._link(req, {"$skiptoken": token})
        else:
            start = bisect.bisect_right(data.deletions, (since, "\uffff"))
            context = f"{req.base}{API_PREFIX}/$metadata#{data.definition.entity_set}/$deletedEntity"
            for version, row_id in data.deletions[start:]:
                if version > upto:
                    break
                body["value"].append({"@odata.context": context, "id": row_id, "reason": "deleted"})
            body["@odata.deltaLink"] = self._delta_link(req, data, select, upto)
        headers = {"Preference-Applied": ",".join(applied)} if applied else {}
        return DvResponse(200, body, headers)

    # ------------------------------------------------------------------------------------------- writes
    def _check_writable(self, data: TableData) -> None:
        if data.definition.read_only:
            raise DvError(
                403,
                "0x80040220",
                f"Principal user is missing the privilege to write {data.definition.logical} records (simulator).",
            )

    def _written(self, req: DvRequest, data: TableData, row: Mapping[str, Any], created: bool) -> DvResponse:
        url = self._entity_url(req, data, row[data.definition.primary_key])
        headers = {"OData-EntityId": url, "ETag": _etag(row)}
        if "return=representation" in _prefer(req.headers):
            select = parse_select(req.query.get("$select"), fields=data.definition.fields)
            headers["Preference-Applied"] = "return=representation"
            body = {"@odata.context": self._context(req, data, select, "/$entity"), **self._row_json(data, row, select)}
            return DvResponse(201 if created else 200, body, headers)
        return DvResponse(204, None, headers)

    def _create(self, req: DvRequest, data: TableData) -> DvResponse:
        self._check_writable(data)
        values = self.values_from(data, self._json_body(req))
        return self._written(req, data, self.store.create(data.definition.entity_set, values), True)

    def _patch(
        self, req: DvRequest, data: TableData, row_id: str | None, key_values: dict[str, Any], key: str
    ) -> DvResponse:
        self._check_writable(data)
        definition = data.definition
        values = self.values_from(data, self._json_body(req))
        pk = definition.primary_key
        if pk in values and key_values.get(pk) not in (None, values[pk]):
            raise payload_error("The primary key in the body does not match the key in the URL.")
        row = self.store.get(definition.entity_set, row_id) if row_id else None
        if_match, if_none = req.headers.get("If-Match"), req.headers.get("If-None-Match")
        if if_none and if_none.strip() == "*" and row is not None:
            raise DvError(412, "0x80040237", "A record with matching key values already exists.")
        if if_match:
            if row is None:
                raise not_found(definition.logical, key)
            if not _etag_matches(if_match, row):
                raise DvError(
                    412,
                    "0x80060882",
                    "The version of the existing record doesn't match the RowVersion property provided.",
                )
        if row is not None:
            return self._written(req, data, self.store.update(definition.entity_set, row[pk], values), False)
        created = self.store.create(definition.entity_set, {**key_values, **values})
        return self._written(req, data, created, True)

    def _delete(self, req: DvRequest, data: TableData, row_id: str | None, key: str) -> DvResponse:
        self._check_writable(data)
        row = self.store.get(data.definition.entity_set, row_id) if row_id else None
        if row is None:
            raise not_found(data.definition.logical, key)
        if_match = req.headers.get("If-Match")
        if if_match and not _etag_matches(if_match, row):
            raise DvError(
                412, "0x80060882", "The version of the existing record doesn't match the RowVersion property provided."
            )
        self.store.delete(data.definition.entity_set, row[data.definition.primary_key])
        return DvResponse(204)

    # ------------------------------------------------------------------------------------------- bulk
    def _bulk(self, req: DvRequest, data: TableData, action: str) -> DvResponse:
        definition = data.definition
        if definition.entity_set in self.bulk_unsupported or definition.read_only:
            raise DvError(
                404,
                "0x8006088a",
                f"Resource not found for the segment 'Microsoft.Dynamics.CRM.{action}' "
                f"({action} is not enabled for entity '{definition.logical}').",
            )
        targets = self._json_body(req).get("Targets")
        if not isinstance(targets, list) or not targets:
            raise payload_error(f"{action} requires a non-empty 'Targets' array.")
        if len(targets) > MAX_BULK:
            raise bad_request(f"{action} accepts at most {MAX_BULK} Targets; {len(targets)} were given.", "0x80044150")
        self.bulk_rows += len(targets)
        ids: list[str] = []
        results: list[dict[str, Any]] = []
        table, pk = definition.entity_set, definition.primary_key
        with self.store.atomic():
            for index, target in enumerate(targets):
                try:
                    if not isinstance(target, dict):
                        raise payload_error("Each target must be a JSON object.")
                    if "@odata.type" not in target:
                        raise payload_error(f"The target must carry '@odata.type': '{definition.odata_type}'.")
                    values = self.values_from(data, target)
                    if action == "CreateMultiple":
                        ids.append(self.store.create(table, values)[pk])
                        continue
                    row_id = values.get(pk)
                    odata_id = target.get("@odata.id")
                    if action == "UpsertMultiple" and isinstance(odata_id, str):
                        # Learn "Use UpsertMultiple": the target names its row by `@odata.id`, e.g.
                        # "accounts(accountnumber='K-1')"; a created row takes the key's values.
                        match = re.fullmatch(rf"(?:.*/)?{re.escape(table)}\((.+)\)", odata_id.strip())
                        if match is None:
                            raise payload_error(f"The @odata.id '{odata_id}' does not name a row of {table}.")
                        found, key_values = self._resolve_key(data, match.group(1))
                        values = {**values, **key_values}
                        row_id = found if found is not None else values.get(pk)
                    if row_id is None and definition.alternate_keys:
                        key_name = definition.alternate_keys[0]
                        row_id = data.key_of(key_name, values.get(key_name))
                    if action == "UpdateMultiple":
                        if row_id is None:
                            raise payload_error(f"The target has no '{pk}' (or alternate key) to update.")
                        ids.append(self.store.update(table, row_id, values)[pk])
                    elif row_id is not None and row_id in data.rows:
                        ids.append(self.store.update(table, row_id, values)[pk])
                        results.append(_upsert_result(definition, row_id, False))
                    else:
                        row = self.store.create(table, values)
                        ids.append(row[pk])
                        results.append(_upsert_result(definition, row[pk], True))
                except DvError as exc:
                    label = target.get(pk) if isinstance(target, dict) else None
                    where = f"Targets[{index}]" + (f" ({label})" if label else "")
                    raise DvError(400, exc.code, f"{action} failed at {where}: {exc.message}") from exc
        context = f"{req.base}{API_PREFIX}/$metadata#Microsoft.Dynamics.CRM.{action}Response"
        if action == "CreateMultiple":
            return DvResponse(200, {"@odata.context": context, "Ids": ids})
        if action == "UpsertMultiple":
            return DvResponse(200, {"@odata.context": context, "Results": results})
        return DvResponse(204)

    # ------------------------------------------------------------------------------------------- seed
    def seed(self, entity: str, count: int, prefix: str, fields: Mapping[str, Any]) -> list[str]:
        """Create `count` rows in-process (all-or-nothing), with unique alternate keys."""
        data = self.store.tables.get(entity)
        if data is None:
            raise bad_request(f"Cannot seed entity set '{entity}'.")
        # Seeding writes tables a client may not (systemusers) with the fields exactly as given.
        constant = self.values_from(data, fields, seeding=True)
        ids: list[str] = []
        tag = prefix[:3].upper() or "S"
        with self.store.atomic():
            for _ in range(count):
                n = data.next_seq
                values = _seed_values(entity, prefix, tag, n)
                if entity == "products":
                    from local.dv_sim.default_set import default_unit_values  # after store (import cycle)

                    values.update(default_unit_values(self.store))
                values.update(constant)
                ids.append(self.store.create(entity, values)[data.definition.primary_key])
        return ids


def _seed_values(entity: str, prefix: str, tag: str, n: int) -> dict[str, Any]:
    if entity == "accounts":
        return {
            "name": f"{prefix} Account {n}",
            "accountnumber": f"{tag}{n:07d}",
            "telephone1": f"+1 555 {n:07d}",
            "emailaddress1": f"account{n}@{prefix.lower() or 'demo'}.example",
            "websiteurl": f"https://{prefix.lower() or 'demo'}{n}.example",
            "address1_line1": f"{n} Main Street",
            "address1_city": "Seattle",
            "address1_postalcode": f"{98000 + n % 1000}",
            "address1_country": "US",
        }
    if entity == "contacts":
        return {
            "firstname": prefix,
            "lastname": f"Contact {n}",
            "emailaddress1": f"contact{n}@{prefix.lower() or 'demo'}.example",
            "telephone1": f"+1 555 {n:07d}",
            "jobtitle": "Buyer",
        }
    if entity == "systemusers":
        slug = prefix.lower().replace(" ", "") or "user"
        return {
            "fullname": f"{prefix} User {n}",
            "internalemailaddress": f"{slug}{n}@contoso.example",
            "domainname": f"{slug}{n}@contoso.example",
            "isdisabled": False,
            "islicensed": True,
            "isintegrationuser": False,
            "accessmode": 0,
        }
    if entity == "opportunities":
        return {"name": f"{prefix} Opportunity {n}", "estimatedvalue": 1000 + n, "closeprobability": 50}
    if entity != "products":
        return {}
    return {
        "name": f"{prefix} Product {n}",
        "productnumber": f"{tag}-P{n:07d}",
        "price": round(10 + (n % 900) * 1.25, 2),
        "description": f"{prefix} product number {n}",
    }


def _upsert_result(definition: TableDef, row_id: str, created: bool) -> dict[str, Any]:
    return {
        "RecordCreated": created,
        "Target": {"@odata.type": f"#{definition.odata_type}", definition.primary_key: row_id},
    }


_KEY_IN = re.compile(
    r"^\(*Microsoft\.Dynamics\.CRM\.In\(PropertyName='(?P<name>\w+)',PropertyValues=\[(?P<values>[^\]]*)\]\)\)*"
    r"(?P<rest>\s+and\s+.*)?$",
    re.S,
)


def _leading_key_in(filter_: str | None, primary_key: str) -> list[str] | None:
    """The ids of a filter that starts with ``Microsoft.Dynamics.CRM.In`` on the primary key and only narrows
    it further with ``and`` (as the engine's lookups by id do); None for any other filter."""
    if not filter_:
        return None
    match = _KEY_IN.match(filter_.strip())
    if match is None or match.group("name").lower() != primary_key:
        return None
    if re.search(r"\bor\b", match.group("rest") or "", re.I):
        return None  # an `or` after it could widen the match beyond the ids
    values = [v.strip() for v in match.group("values").split(",") if v.strip()]
    if not all(len(v) >= 2 and v[0] == v[-1] == "'" for v in values):
        return None
    return [v[1:-1].lower() for v in values]


def _take(
    source: Iterator[tuple[int, dict[str, Any]]], predicate: Any, limit: int
) -> tuple[list[dict[str, Any]], bool, int]:
    """Up to `limit` matching rows, whether another match follows, and the position of the last one taken."""
    rows: list[dict[str, Any]] = []
    last = 0
    for position, row in source:
        if predicate is not None and not predicate(row):
            continue
        if len(rows) == limit:
            return rows, True, last
        rows.append(row)
        last = position
    return rows, False, last


def _check_value(definition: TableDef, name: str, fdef: FieldDef, value: Any) -> Any:
    if value is None:
        return None
    kind = fdef.kind
    ok = True
    if kind == "string":
        ok = isinstance(value, str)
        if ok and fdef.max_length is not None and len(value) > fdef.max_length:
            raise DvError(
                400,
                "0x80044331",
                f"A validation error occurred. The length of the '{name}' attribute of the '{definition.logical}' "
                f"entity exceeded the maximum allowed length of '{fdef.max_length}'.",
            )
    elif kind == "guid":
        value = normalize_guid(value)
        ok = value is not None
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and name == "statecode" and value not in state_codes(definition.logical):
            raise DvError(400, "0x80040203", f"{value} is not a valid state code on {definition.logical}.")
    elif kind == "decimal":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "bool":
        ok = isinstance(value, bool)
    if not ok:
        raise payload_error(f"Cannot convert the literal '{value}' to the expected type of property '{name}' ({kind}).")
    return value
