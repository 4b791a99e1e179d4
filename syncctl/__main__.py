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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="syncctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--base-url", default=os.environ.get("SYNC_BASE_URL", "http://127.0.0.1:7071"))
    p.add_argument("--key", default=os.environ.get("SYNC_FUNCTION_KEY", "local-dev-key"))
    p.add_argument("--no-wait", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("mappings")
    for name in ("pause", "resume", "uncouple-all", "match"):
        sub.add_parser(name).add_argument("mapping")
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
        return _print(api.call("GET", "/api/mappings"))
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
        return _job_answer(api, api.call("POST", f"/api/mappings/{a.mapping}/couplings/match", {}), a.no_wait)
    if a.cmd == "job":
        return _job_answer(api, api.call("POST", f"/api/mappings/{a.mapping}/jobs", {"kind": a.kind}), a.no_wait)
    if a.cmd in ("errors", "jobs"):
        params = {"mapping": a.mapping} if a.mapping else {}
        return _print(api.call("GET", f"/api/{a.cmd}", **params))
    if a.cmd == "retry":
        body = {"ids": a.id} if a.id else {"mapping": a.mapping, "all": True}
        return _job_answer(api, api.call("POST", "/api/errors/retry", body), a.no_wait)
    if a.cmd == "wait":
        return wait(api, a.job_id)
    return 2


if __name__ == "__main__":
    sys.exit(main())
