"""syncctl: the administrator's command line for the coupling & sync service's HTTP API.

    python -m syncctl mappings
    python -m syncctl couple CUSTOMER --bc-id G --dataverse-id G [--replace] [--sync-after toDataverse]
    python -m syncctl couple CUSTOMER --bc-id G --create-new
    python -m syncctl sync CUSTOMER --bc-id G [--bc-id G ...] --direction toDataverse [--force]
    python -m syncctl uncouple CUSTOMER --bc-id G [...]        python -m syncctl uncouple-all CUSTOMER
    python -m syncctl job CUSTOMER full|incremental             python -m syncctl match CUSTOMER
    python -m syncctl errors [--mapping M]                      python -m syncctl retry --mapping M
    python -m syncctl jobs [--mapping M]                        python -m syncctl wait JOB_ID
    python -m syncctl pause|resume CUSTOMER
    python -m syncctl mappings [CUSTOMER]                      python -m syncctl set CUSTOMER conflictPolicy=bcWins ...
    python -m syncctl fields CUSTOMER [--json]                 python -m syncctl reset CUSTOMER
    python -m syncctl add-field CUSTOMER --bc addressLine2 --dataverse address1_line2 [--max-length 50] [--trim]
    python -m syncctl set-field CUSTOMER city~address1_city --status disabled | --use-for-match --match-priority 1
    python -m syncctl delete-field CUSTOMER addressLine2~address1_line2
    python -m syncctl match CUSTOMER [--bc-id G ...] [--field displayName=name:1[:cs] ...] [--create-new-if-no-match]
                                     [--sync-after]

Base URL and key from SYNC_BASE_URL (default http://127.0.0.1:7071) and SYNC_FUNCTION_KEY.
Commands that start a job wait for it with a progress bar unless --no-wait.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any
from urllib.parse import quote

import requests

TERMINAL = {"succeeded", "partial", "failed"}


class Api:
    def __init__(self, base: str, key: str) -> None:
        self.base = base.rstrip("/")
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers["x-functions-key"] = key

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> requests.Response:
        url = path if path.startswith("http") else f"{self.base}{path}"
        return self.http.request(method, url, json=body, params=params or None, timeout=120)


def _print(resp: requests.Response) -> int:
    try:
        print(json.dumps(resp.json(), indent=2))
    except ValueError:
        print(resp.text)
    return 0 if resp.status_code < 400 else 1


def progress_bar(job: dict[str, Any], width: int = 30) -> str:
    counts = job.get("counts", {})
    done = sum(v for k, v in counts.items() if k != "coupled")
    status = job.get("status", "?")
    fill = width if status in TERMINAL else min(width - 1, done % (width + 1))
    return f"[{'#' * fill}{'.' * (width - fill)}] {status:<9} {done:>7} records  " + " ".join(
        f"{k}={v}" for k, v in counts.items() if v
    )


def wait(api: Api, job_id: str, timeout: float = 3600) -> int:
    deadline = time.monotonic() + timeout
    while True:
        job = api.call("GET", f"/api/jobs/{job_id}").json()
        sys.stderr.write("\r" + progress_bar(job))
        sys.stderr.flush()
        if job.get("status") in TERMINAL:
            sys.stderr.write("\n")
            print(json.dumps(job, indent=2))
            return 0 if job["status"] == "succeeded" else 1
        if time.monotonic() > deadline:
            sys.stderr.write("\n")
            return 2
        time.sleep(0.5)


def _job_answer(api: Api, resp: requests.Response, no_wait: bool) -> int:
    if resp.status_code != 202 or no_wait:
        return _print(resp)
    return wait(api, resp.json()["jobId"])


def _all_pages(api: Api, path: str) -> int:
    """Prints every item of a paged list as one JSON array (following ``nextLink``)."""
    items: list[Any] = []
    resp = api.call("GET", path, top=1000)
    while True:
        if resp.status_code >= 400:
            return _print(resp)
        body = resp.json()
        items += body["value"]
        if not body.get("nextLink"):
            print(json.dumps(items, indent=2))
            return 0
        resp = api.call("GET", body["nextLink"])


def _plan(api: Api, a: argparse.Namespace) -> int:
    """#22: a plan of ids (printed), or of the whole mapping (a job: waited for, then its items printed)."""
    if a.kind:
        resp = api.call("POST", f"/api/mappings/{quote(a.mapping)}/plan", {"kind": a.kind})
        if resp.status_code != 202 or a.no_wait:
            return _print(resp)
        job_id = resp.json()["jobId"]
        code = wait(api, job_id)
        return _all_pages(api, f"/api/jobs/{job_id}/plan") or code
    body: dict[str, Any] = {"bcIds": a.bc_id} if a.bc_id else {"dataverseIds": a.dataverse_id}
    if a.direction:
        body["direction"] = a.direction
    if a.force:
        body["force"] = True
    return _print(api.call("POST", f"/api/mappings/{quote(a.mapping)}/plan", body))


def fields_table(fields: list[dict[str, Any]]) -> str:
    """The Integration Field Mappings page as text: one line per field mapping."""
    rows = [("ID", "DIRECTION", "STATUS", "MATCH", "USER", "TRANSFORM")]
    for f in fields:
        match = f"{f['matchPriority']}{'cs' if f['caseSensitive'] else ''}" if f["useForMatch"] else ""
        extra = ", ".join(
            x
            for x in (
                f"const={f['constant']!r}" if f.get("constant") is not None else "",
                json.dumps(f["transform"]) if f.get("transform") else "",
                "optionMap" if f.get("optionMap") else "",
                f"lookup={f['lookup']['mapping']}" if f.get("lookup") else "",
                "clearOnFail" if f.get("clearOnFail") else "",
            )
            if x
        )
        rows.append((f["id"], f["direction"], f["status"], match, "yes" if f["userDefined"] else "", extra))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows)


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _settings(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {pair!r}")
        out[key] = _scalar(value)
    return out


def _field_body(a: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if a.direction:
        body["direction"] = a.direction
    if a.constant is not None:
        body["constant"] = _scalar(a.constant)
    transform = {k: v for k, v in {"trim": a.trim or None, "case": a.case, "maxLength": a.max_length}.items() if v}
    if transform:
        body["transform"] = transform
    for flag, key in (("use_for_match", "useForMatch"), ("case_sensitive", "caseSensitive"),
                      ("clear_on_fail", "clearOnFail")):  # fmt: skip
        if getattr(a, flag):
            body[key] = True
    if a.match_priority is not None:
        body["matchPriority"] = a.match_priority
    return body


def _match_field(text: str) -> dict[str, Any]:
    bc, _, rest = text.partition("=")
    parts = rest.split(":")
    item: dict[str, Any] = {"bc": bc, "dataverse": parts[0]}
    if len(parts) > 1 and parts[1]:
        item["priority"] = int(parts[1])
    if len(parts) > 2 and parts[2] == "cs":
        item["caseSensitive"] = True
    return item


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="syncctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--base-url", default=os.environ.get("SYNC_BASE_URL", "http://127.0.0.1:7071"))
    p.add_argument("--key", default=os.environ.get("SYNC_FUNCTION_KEY", "local-dev-key"))
    p.add_argument("--no-wait", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("mappings").add_argument("mapping", nargs="?")
    for name in ("pause", "resume", "uncouple-all", "reset"):
        sub.add_parser(name).add_argument("mapping")
    st = sub.add_parser("set")
    st.add_argument("mapping")
    st.add_argument("settings", nargs="+", metavar="key=value")
    fl = sub.add_parser("fields")
    fl.add_argument("mapping")
    fl.add_argument("--json", action="store_true")
    for name in ("add-field", "set-field"):
        af = sub.add_parser(name)
        af.add_argument("mapping")
        if name == "add-field":
            af.add_argument("--bc")
            af.add_argument("--dataverse")
        else:
            af.add_argument("field_id")
            af.add_argument("--status", choices=["enabled", "disabled"])
        af.add_argument("--direction", choices=["toDataverse", "fromDataverse", "bidirectional"])
        af.add_argument("--constant")
        af.add_argument("--trim", action="store_true")
        af.add_argument("--case", choices=["upper", "lower"])
        af.add_argument("--max-length", type=int)
        af.add_argument("--use-for-match", action="store_true")
        af.add_argument("--match-priority", type=int)
        af.add_argument("--case-sensitive", action="store_true")
        af.add_argument("--clear-on-fail", action="store_true")
    df = sub.add_parser("delete-field")
    df.add_argument("mapping")
    df.add_argument("field_id")
    mt = sub.add_parser("match")
    mt.add_argument("mapping")
    mt.add_argument("--bc-id", action="append", default=[])
    mt.add_argument("--field", action="append", default=[], metavar="BC=DATAVERSE[:PRIORITY[:cs]]")
    mt.add_argument("--create-new-if-no-match", action="store_true")
    mt.add_argument("--sync-after", action="store_true")
    c = sub.add_parser("couple")
    c.add_argument("mapping")
    c.add_argument("--bc-id")
    c.add_argument("--dataverse-id")
    c.add_argument("--create-new", action="store_true")
    c.add_argument("--replace", action="store_true")
    c.add_argument("--sync-after", choices=["none", "toDataverse", "fromDataverse"])
    for name in ("sync", "uncouple"):
        s = sub.add_parser(name)
        s.add_argument("mapping")
        s.add_argument("--bc-id", action="append", default=[])
        s.add_argument("--dataverse-id", action="append", default=[])
        if name == "sync":
            s.add_argument("--direction", choices=["toDataverse", "fromDataverse", "bidirectional"])
            s.add_argument("--force", action="store_true")
    pl = sub.add_parser("plan", help="what a sync would do, without doing it (#22)")
    pl.add_argument("mapping")
    pl.add_argument("--bc-id", action="append", default=[])
    pl.add_argument("--dataverse-id", action="append", default=[])
    pl.add_argument("--direction", choices=["toDataverse", "fromDataverse", "bidirectional"])
    pl.add_argument("--force", action="store_true")
    pl.add_argument("--kind", choices=["full", "incremental"], help="plan the whole mapping (a plan job)")
    hi = sub.add_parser("history", help="the history of one coupled (or formerly coupled) BC record (#22)")
    hi.add_argument("mapping")
    hi.add_argument("bc_id")
    j = sub.add_parser("job")
    j.add_argument("mapping")
    j.add_argument("kind", choices=["full", "incremental"])
    for name in ("errors", "jobs"):
        sub.add_parser(name).add_argument("--mapping")
    r = sub.add_parser("retry")
    r.add_argument("--mapping")
    r.add_argument("--id", action="append", default=[])
    sub.add_parser("wait").add_argument("job_id")
    a = p.parse_args(argv)
    api = Api(a.base_url, a.key)

    if a.cmd == "mappings":
        return _print(api.call("GET", f"/api/mappings/{quote(a.mapping)}" if a.mapping else "/api/mappings"))
    if a.cmd == "set":
        return _print(api.call("PATCH", f"/api/mappings/{quote(a.mapping)}", _settings(a.settings)))
    if a.cmd == "reset":
        return _print(api.call("POST", f"/api/mappings/{quote(a.mapping)}/reset"))
    if a.cmd == "fields":
        resp = api.call("GET", f"/api/mappings/{quote(a.mapping)}/fields")
        if a.json or resp.status_code >= 400:
            return _print(resp)
        print(fields_table(resp.json()["value"]))
        return 0
    if a.cmd in ("add-field", "set-field"):
        body = _field_body(a)
        if a.cmd == "add-field":
            body.update({k: v for k, v in {"bc": a.bc, "dataverse": a.dataverse}.items() if v})
            return _print(api.call("POST", f"/api/mappings/{quote(a.mapping)}/fields", body))
        if a.status:
            body["status"] = a.status
        return _print(api.call("PATCH", f"/api/mappings/{quote(a.mapping)}/fields/{quote(a.field_id)}", body))
    if a.cmd == "delete-field":
        resp = api.call("DELETE", f"/api/mappings/{quote(a.mapping)}/fields/{quote(a.field_id)}")
        return 0 if resp.status_code == 204 else _print(resp)
    if a.cmd in ("pause", "resume"):
        state = "paused" if a.cmd == "pause" else "running"
        return _print(api.call("PATCH", f"/api/mappings/{a.mapping}", {"state": state}))
    if a.cmd == "couple":
        body: dict[str, Any] = {k: v for k, v in {"bcId": a.bc_id, "dataverseId": a.dataverse_id}.items() if v}
        if a.create_new:
            body["createNew"] = True
        if a.replace:
            body["replace"] = True
        if a.sync_after:
            body["syncAfter"] = a.sync_after
        return _print(api.call("POST", f"/api/mappings/{a.mapping}/couplings", body))
    if a.cmd in ("sync", "uncouple"):
        body = {"bcIds": a.bc_id} if a.bc_id else {"dataverseIds": a.dataverse_id}
        if a.cmd == "sync":
            if a.direction:
                body["direction"] = a.direction
            if a.force:
                body["force"] = True
            return _job_answer(api, api.call("POST", f"/api/mappings/{a.mapping}/sync", body), a.no_wait)
        return _print(api.call("POST", f"/api/mappings/{a.mapping}/uncouple", body))
    if a.cmd == "uncouple-all":
        return _job_answer(api, api.call("DELETE", f"/api/mappings/{a.mapping}/couplings"), a.no_wait)
    if a.cmd == "match":
        body = {"bcIds": a.bc_id} if a.bc_id else {}
        if a.field:
            body["matchFields"] = [_match_field(f) for f in a.field]
        if a.create_new_if_no_match:
            body["createNewIfNoMatch"] = True
        if a.sync_after:
            body["syncAfter"] = True
        return _job_answer(api, api.call("POST", f"/api/mappings/{quote(a.mapping)}/couplings/match", body), a.no_wait)
    if a.cmd == "job":
        return _job_answer(api, api.call("POST", f"/api/mappings/{a.mapping}/jobs", {"kind": a.kind}), a.no_wait)
    if a.cmd in ("errors", "jobs"):
        params = {"mapping": a.mapping} if a.mapping else {}
        return _print(api.call("GET", f"/api/{a.cmd}", **params))
    if a.cmd == "retry":
        body = {"ids": a.id} if a.id else {"mapping": a.mapping, "all": True}
        return _job_answer(api, api.call("POST", "/api/errors/retry", body), a.no_wait)
    if a.cmd == "plan":
        return _plan(api, a)
    if a.cmd == "history":
        return _all_pages(api, f"/api/mappings/{quote(a.mapping)}/couplings/{quote(a.bc_id)}/history")
    if a.cmd == "wait":
        return wait(api, a.job_id)
    return 2


if __name__ == "__main__":
    sys.exit(main())
