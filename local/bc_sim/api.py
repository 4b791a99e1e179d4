"""Synchronous request dispatch of the BC simulator's entity routes (shared by HTTP handlers and $batch).

Everything here is plain synchronous code over the in-memory ``Store``: a ``$batch`` runs its inner
requests back to back without yielding to the event loop, which is what makes ``Isolation: snapshot``
batches isolated.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from local.bc_sim import documents
from local.bc_sim.entities import COMPANY_FIELDS, SCHEMAS
from local.bc_sim.store import BCError, Store, Table
from local.odata import (
    Filter,
    ODataError,
    decode_skiptoken,
    encode_skiptoken,
    parse_filter,
    parse_maxpagesize,
    parse_orderby,
    parse_select,
    parse_top_skip,
    select_fields,
    sort_key,
)

MAX_PAGE_SIZE = 20_000  # BC online returns at most 20,000 entities per page
_G = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_PATH_RE = re.compile(rf"^companies(?:\((?P<company>{_G})\)(?:/(?P<entity>[A-Za-z]+)(?:\((?P<key>[^)]*)\))?)?)?/?$")
# A document's lines (``salesOrders(<id>)/salesOrderLines[(<id>)]``) and its bound actions
# (``salesOrders(<id>)/Microsoft.NAV.release``).
_DOC_RE = re.compile(
    rf"^companies\((?P<company>{_G})\)/(?P<entity>salesOrders|salesInvoices)\('?(?P<key>{_G})'?\)/"
    rf"(?:(?P<lines>salesOrderLines|salesInvoiceLines)(?:\('?(?P<line>{_G})'?\))?|Microsoft\.NAV\.(?P<action>[A-Za-z]+))/?$"
)
JSON_CT = "application/json; odata.metadata=minimal; odata.streaming=true"


@dataclass
class SimRequest:
    method: str
    path: str  # relative to .../api/v2.0/, e.g. "companies(<id>)/customers(<id>)"
    query: Mapping[str, str]
    headers: Mapping[str, str]  # case-insensitive mapping (multidict.CIMultiDict)
    body: Any
    base_url: str  # absolute .../api/v2.0 (for @odata.context / nextLink)
    api: str = "v2.0"  # or a custom API route publisher/group/version (its entities are keyed by it)


@dataclass
class SimResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def error_response(err: BCError) -> SimResponse:
    return SimResponse(err.status, err.body())


def route_of(path: str) -> str:
    """The stats route key of a relative path: the last entity set named in it."""
    names = re.findall(r"([A-Za-z$]+)(?:\([^)]*\))?", path.split("?", 1)[0])
    return names[-1] if names else "(root)"


class Api:
    def __init__(self, store: Store) -> None:
        self.store = store

    def handle(self, req: SimRequest) -> SimResponse:
        try:
            return self._handle(req)
        except BCError as err:
            return error_response(err)
        except ODataError as err:
            return SimResponse(400, {"error": {"code": "BadRequest", "message": err.message}})

    def _handle(self, req: SimRequest) -> SimResponse:
        doc = _DOC_RE.match(req.path) if req.api == "v2.0" else None
        if doc is not None:
            return self._document_path(req, doc)
        m = _PATH_RE.match(req.path)
        if not m:
            raise BCError(404, "BadRequest_NotFound", f"No HTTP resource was found that matches the URI '{req.path}'.")
        company, entity, key = m.group("company"), m.group("entity"), m.group("key")
        if company is None:
            return self._companies(req, None)
        if entity is None:
            return self._companies(req, company)
        if req.api != "v2.0":
            entity = f"{req.api}/{entity}"  # a custom API page: SCHEMAS keys carry the route
        if entity not in SCHEMAS:
            raise BCError(404, "BadRequest_NotFound", f"No HTTP resource was found that matches the URI '{req.path}'.")
        if key is not None:
            key = key.strip("'")
            if not re.fullmatch(_G, key):
                raise BCError(400, "BadRequest", f"Invalid key value '{key}'; a GUID is expected.")
            return self._entity(req, company, entity, key.lower())
        return self._collection(req, company, entity)

    # ------------------------------------------------------------------ companies (read-only)
    def _companies(self, req: SimRequest, company: str | None) -> SimResponse:
        if req.method != "GET":
            raise BCError(405, "BadRequest_MethodNotAllowed", f"'{req.method}' is not allowed on companies.")
        if company is not None:
            row = self.store.company(company)
            return SimResponse(200, {"@odata.context": f"{req.base_url}/$metadata#companies/$entity", **row})
        rows = list(self.store.companies.values())
        select = parse_select(req.query.get("$select"), fields=COMPANY_FIELDS)
        if "$filter" in req.query:
            pred = parse_filter(req.query["$filter"], fields=COMPANY_FIELDS)
            rows = [r for r in rows if pred(r)]
        return SimResponse(
            200,
            {
                "@odata.context": f"{req.base_url}/$metadata#companies",
                "value": [select_fields(r, select) for r in rows],
            },
        )

    # ------------------------------------------------------------------ single entity
    def _entity(self, req: SimRequest, company: str, entity: str, rid: str) -> SimResponse:
        store = self.store
        context = f"{req.base_url}/$metadata#companies({company.lower()})/{_short(entity)}/$entity"
        if req.method == "GET":
            row = store.get(company, entity, rid)
            select = parse_select(req.query.get("$select"), fields=SCHEMAS[entity].fields)
            return _row_response(200, context, select_fields(row, select))
        if req.method == "PATCH":
            if_match = req.headers.get("If-Match")
            if if_match is None:
                # Learn's BC error table and docs issue #813: a PATCH without If-Match is 400 BadRequest_InvalidToken.
                raise BCError(
                    400,
                    "BadRequest_InvalidToken",
                    "Could not validate the client concurrency token required by the service. "
                    "Please provide a valid token in the client request.",
                )
            row = store.update(company, entity, rid, _json_object(req.body), if_match)
            return _row_response(200, context, row)
        if req.method == "DELETE":
            store.delete(company, entity, rid, req.headers.get("If-Match"))
            return SimResponse(204)
        raise BCError(405, "BadRequest_MethodNotAllowed", f"'{req.method}' is not allowed on a single {entity[:-1]}.")

    # ------------------------------------------------------------------ documents' lines and actions
    def _document_path(self, req: SimRequest, m: re.Match[str]) -> SimResponse:
        company, entity, doc_id = m.group("company"), m.group("entity"), m.group("key").lower()
        company_id = self.store.company(company)["id"]
        if m.group("action"):
            if req.method != "POST":
                raise BCError(405, "BadRequest_MethodNotAllowed", f"'{req.method}' is not allowed on an action.")
            documents.run_action(self.store, company_id, entity, doc_id, m.group("action"))
            return SimResponse(204)
        lines = m.group("lines")
        if documents.LINES_OF[entity] != lines:
            raise BCError(404, "BadRequest_NotFound", f"No HTTP resource was found that matches the URI '{req.path}'.")
        self.store.get(company_id, entity, doc_id)  # 404 for a missing document
        if m.group("line"):
            line = self.store.get(company_id, lines, m.group("line"))
            if line["documentId"] != doc_id:
                raise BCError(404, "BadRequest_NotFound", f"The {lines[:-1]} does not exist.")
            return self._entity(req, company, lines, line["id"])
        if req.method == "POST":
            body = {**_json_object(req.body), "documentId": doc_id}
            return self._collection(_replace(req, body=body), company, lines)
        own = f"documentId eq {doc_id}"
        query = dict(req.query)
        query["$filter"] = f"({query['$filter']}) and {own}" if query.get("$filter") else own
        return self._collection(_replace(req, query=query), company, lines)

    # ------------------------------------------------------------------ collection
    def _collection(self, req: SimRequest, company: str, entity: str) -> SimResponse:
        store = self.store
        company_id = store.company(company)["id"]
        if entity in documents.HEADER_OF and req.method == "GET":
            _require_document_filter(req)
        if req.method == "POST":
            row = store.create(company_id, entity, _json_object(req.body))
            context = f"{req.base_url}/$metadata#companies({company_id})/{_short(entity)}/$entity"
            resp = _row_response(201, context, row)
            resp.headers["Location"] = f"{req.base_url}/companies({company_id})/{_short(entity)}({row['id']})"
            return resp
        if req.method != "GET":
            raise BCError(405, "BadRequest_MethodNotAllowed", f"'{req.method}' is not allowed on {entity}.")
        table = store.table(company_id, entity)
        page, next_state, page_size = query_table(table, req.query, req.headers.get("Prefer"))
        body: dict[str, Any] = {"@odata.context": f"{req.base_url}/$metadata#companies({company_id})/{_short(entity)}"}
        body["value"] = page
        headers = {"Content-Type": JSON_CT, "OData-Version": "4.0"}
        if parse_maxpagesize(req.headers.get("Prefer")):
            headers["Preference-Applied"] = f"odata.maxpagesize={page_size}"
        if next_state is not None:
            keep = {k: v for k, v in req.query.items() if k not in ("$skip", "$top", "$skiptoken")}
            keep["$skiptoken"] = encode_skiptoken(next_state)
            body["@odata.nextLink"] = (
                f"{req.base_url}/companies({company_id})/{_short(entity)}?"
                f"{urlencode(keep, quote_via=quote, safe='$,()')}"
            )
        return SimResponse(200, body, headers)


def _replace(req: SimRequest, **changes: Any) -> SimRequest:
    from dataclasses import replace

    return replace(req, **changes)


def _require_document_filter(req: SimRequest) -> None:
    """The line pages' OnFindRecord: the top-level collection needs a filter on documentId or id."""
    text = req.query.get("$filter") or ""
    if not re.search(r"\b(documentId|id)\s+(eq|in)\b", text):
        raise BCError(400, "BadRequest", "You must specify an Id or a Document Id to get the lines.")


def _short(entity: str) -> str:
    return entity.rsplit("/", 1)[-1]


def _row_response(status: int, context: str, row: Mapping[str, Any]) -> SimResponse:
    headers = {"Content-Type": JSON_CT, "OData-Version": "4.0"}
    if "@odata.etag" in row:
        headers["ETag"] = row["@odata.etag"]
    return SimResponse(status, {"@odata.context": context, **row}, headers)


def _json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BCError(400, "BadRequest", "The request body must be a JSON object.")
    return body


# ---------------------------------------------------------------------------------------------- querying
def _index_bound(name: str, value: Any) -> str | None:
    """A literal as the string form stored in the index (for a bisect start), or None if not usable."""
    if name == "lastModifiedDateTime":
        if isinstance(value, datetime):
            utc = value.astimezone(UTC)
            return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
        return None
    return value if isinstance(value, str) else None


def query_table(
    table: Table, query: Mapping[str, str], prefer: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, int]:
    """Run a collection GET: returns (page rows projected by $select, next skiptoken state or None, page size).

    Orderings on an indexed field (``number`` = the default order, ``lastModifiedDateTime``) walk the
    sorted index from the skiptoken's position (and from a ``gt``/``ge`` bound of the filter), so a page
    costs O(page + skipped non-matching rows), not O(all rows). Other orderings sort the matches.
    """
    fields = table.schema.fields
    pred = parse_filter(query["$filter"], fields=fields) if query.get("$filter") else None
    orderby = parse_orderby(query.get("$orderby"), fields=fields)
    select = parse_select(query.get("$select"), fields=fields)
    top, skip = parse_top_skip(query.get("$top"), query.get("$skip"))
    page_size = min(parse_maxpagesize(prefer) or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
    token = decode_skiptoken(query["$skiptoken"]) if query.get("$skiptoken") else None
    if token is not None:
        skip = 0
        top = token.get("t")
    limit = page_size if top is None else min(page_size, top)

    rows: list[dict[str, Any]] = []
    state: dict[str, Any] | None = None
    if limit > 0:
        if len(orderby) <= 1 and (not orderby or orderby[0][0] in table.index):
            name, desc = orderby[0] if orderby else (table.key, False)
            rows, last = _scan_index(table, name, desc, pred, token, skip, limit)
            if last is not None:
                state = {"k": list(last)}
        else:
            rows, offset = _scan_sorted(table, orderby, pred, token, skip, limit)
            if offset is not None:
                state = {"o": offset}
    if state is not None:
        remaining = None if top is None else top - len(rows)
        if remaining is not None and remaining <= 0:
            state = None
        else:
            state["t"] = remaining
    return [select_fields(r, select) for r in rows], state, page_size


def _id_lookup(table: Table, pred: Filter | None) -> list[dict[str, Any]] | None:
    """Rows named by a top-level ``id eq``/``id in`` condition (None when the filter has none)."""
    if pred is None:
        return None
    for cond in pred.conditions:
        if cond.path == "id" and cond.op in ("eq", "in"):
            values = cond.value if cond.op == "in" else [cond.value]
            found = [table.rows.get(str(v).lower()) for v in values if isinstance(v, str)]
            return [r for r in found if r is not None]
    return None


def _scan_index(
    table: Table,
    name: str,
    desc: bool,
    pred: Filter | None,
    token: dict[str, Any] | None,
    skip: int,
    limit: int,
) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    index = table.index[name]
    direct = _id_lookup(table, pred)
    if direct is not None:
        entries: Iterator[tuple[str, str]] = iter(sorted(((r[name], r["id"]) for r in direct), reverse=desc))
        if token is not None:
            last = tuple(token.get("k") or ())
            entries = (e for e in entries if (e < last if desc else e > last))
    elif not desc:
        start = 0
        if token is not None:
            start = bisect_right(index, tuple(token.get("k") or ()))
        for cond in pred.conditions if pred else ():
            bound = _index_bound(name, cond.value) if cond.path == name and cond.op in ("gt", "ge", "eq") else None
            if bound is not None:
                start = max(start, bisect_left(index, (bound,)))
        stop = len(index)
        for cond in pred.conditions if pred else ():
            bound = _index_bound(name, cond.value) if cond.path == name and cond.op in ("lt", "le", "eq") else None
            if bound is not None:
                # "\uffff" steps past every value sharing the bound's (ms-truncated) prefix; the predicate re-checks
                stop = min(stop, bisect_right(index, (bound + "\uffff",)))
        entries = (index[i] for i in range(start, stop))
    else:
        stop = len(index)
        if token is not None:
            stop = bisect_left(index, tuple(token.get("k") or ()))
        for cond in pred.conditions if pred else ():
            bound = _index_bound(name, cond.value) if cond.path == name and cond.op in ("lt", "le", "eq") else None
            if bound is not None:
                # the index stores ms precision; step past equal-prefix values, the predicate re-checks
                stop = min(stop, bisect_right(index, (bound + "\uffff",)))
        entries = (index[i] for i in range(stop - 1, -1, -1))

    rows: list[dict[str, Any]] = []
    last: tuple[str, str] | None = None
    for entry in entries:
        row = table.rows[entry[1]]
        if pred is not None and not pred(row):
            continue
        if skip:
            skip -= 1
            continue
        rows.append(row)
        last = entry
        if len(rows) >= limit:
            return rows, last
    return rows, None


def _scan_sorted(
    table: Table,
    orderby: list[tuple[str, bool]],
    pred: Filter | None,
    token: dict[str, Any] | None,
    skip: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int | None]:
    direct = _id_lookup(table, pred)
    matches = direct if direct is not None else list(table.rows.values())
    if pred is not None:
        matches = [r for r in matches if pred(r)]
    matches.sort(key=lambda r: r["id"])
    for name, desc in reversed(orderby):  # stable sorts, least significant key first
        matches.sort(key=lambda r, n=name: sort_key(r.get(n)), reverse=desc)
    start = int(token.get("o", 0)) if token is not None else skip
    rows = matches[start : start + limit]
    end = start + len(rows)
    return rows, (end if end < len(matches) and len(rows) == limit else None)
