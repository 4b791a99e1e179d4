"""Fixtures of the integration tests: an API client of the local host over real HTTP."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests


class ApiClient:
    def __init__(self, base_url: str, key: str) -> None:
        self.base = base_url.rstrip("/")
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers["x-functions-key"] = key

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 60)
        url = path if path.startswith("http") else self.base + path
        return self.http.request(method, url, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def all_pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        resp = self.get(path, params={"top": 1000, **params})
        while True:
            body = resp.json()
            out += body["value"]
            if not body.get("nextLink"):
                return out
            resp = self.get(body["nextLink"])

    def snapshot(self) -> dict[str, Any]:
        """Everything the API can show: mappings, couplings, open and closed errors, jobs."""
        mappings = self.get("/api/mappings").json()["value"]
        return {
            "mappings": mappings,
            "couplings": {m["name"]: self.all_pages(f"/api/mappings/{m['name']}/couplings") for m in mappings},
            "errors": self.all_pages("/api/errors", includeClosed="true"),
            "jobs": [(j["jobId"], j["status"], j["counts"]) for j in self.all_pages("/api/jobs")],
        }

    def wait_for_job(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(f"/api/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "partial", "failed"):
                return job
            assert time.monotonic() < deadline, f"job not finished: {job}"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def api(stack: Any) -> ApiClient:
    return ApiClient(stack.host_url, stack.function_key)


@pytest.fixture(scope="session")
def world(stack: Any) -> dict[str, Any]:
    """BC and Dataverse helpers talking to the simulators with tokens from the local authority."""
    from tests.integration.sims import SimClients

    return {"sims": SimClients.for_stack(stack)}
