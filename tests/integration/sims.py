"""Clients of the simulators for integration tests: the real BC API v2.0 / Dataverse Web API shapes,
bearer tokens from the local authority through MSAL (the same identity layer the service uses)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from local.authority import local_client_settings
from shared.config import settings_from_env
from shared.identity import TokenProvider

EXAMPLE = Path(__file__).resolve().parents[3] / "shared" / "contract" / "examples"


def dataverse_context(account_id: str, name: str, telephone: str) -> dict[str, Any]:
    """The contract's example Dataverse webhook body (a RemoteExecutionContext) for one account's update."""
    ctx = json.loads((EXAMPLE / "dataverse-remote-execution-context.json").read_text())
    ctx = json.loads(json.dumps(ctx).replace(ctx["PrimaryEntityId"], account_id))
    for attr in ctx["InputParameters"][0]["value"]["Attributes"]:
        if attr["key"] == "name":
            attr["value"] = name
        if attr["key"] == "telephone1":
            attr["value"] = telephone
    ctx["OperationId"] = str(uuid.uuid4())
    return ctx


@dataclass
class SimClients:
    bc_api: str
    dv_api: str
    bc_token: Any
    dv_token: Any
    http: requests.Session
    company: str = ""

    @classmethod
    def for_stack(cls, stack: Any) -> SimClients:
        settings = settings_from_env(stack.child_env())
        provider = TokenProvider.from_settings(local_client_settings(settings))  # the seeding tool's sign-in
        http = requests.Session()
        http.trust_env = False
        c = cls(
            settings.bc_api_root,
            settings.dataverse_api_root,
            lambda: provider.get_token(settings.bc_audience + "/.default").token,
            lambda: provider.get_token(settings.dataverse_audience + "/.default").token,
            http,
        )
        c.company = c._bc("GET", f"{c.bc_api}/companies").json()["value"][0]["id"]
        return c

    def _bc(self, method: str, url: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.bc_token()}", **kw.pop("headers", {})}
        return self.http.request(method, url, headers=headers, timeout=30, **kw)

    def _dv(self, method: str, url: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.dv_token()}", **kw.pop("headers", {})}
        return self.http.request(method, url, headers=headers, timeout=30, **kw)

    def _bc_url(self, entity: str, rid: str | None = None) -> str:
        url = f"{self.bc_api}/companies({self.company})/{entity}"
        return f"{url}({rid})" if rid else url

    def bc_create(self, entity: str, **fields: Any) -> str:
        r = self._bc("POST", self._bc_url(entity), json=fields)
        assert r.status_code == 201, r.text
        return r.json()["id"].lower()

    def bc_get(self, entity: str, rid: str) -> dict[str, Any] | None:
        r = self._bc("GET", self._bc_url(entity, rid))
        return None if r.status_code == 404 else r.json()

    def bc_patch(self, entity: str, rid: str, **fields: Any) -> None:
        r = self._bc("PATCH", self._bc_url(entity, rid), json=fields, headers={"If-Match": "*"})
        assert r.status_code == 200, r.text

    def bc_find(self, entity: str, field: str, value: str) -> list[dict[str, Any]]:
        lit = "'" + value.replace("'", "''") + "'"
        r = self._bc("GET", self._bc_url(entity), params={"$filter": f"{field} eq {lit}"})
        assert r.status_code == 200, r.text
        return r.json()["value"]

    def bc_all(self, entity: str) -> list[dict[str, Any]]:
        r = self._bc("GET", self._bc_url(entity), headers={"Prefer": "odata.maxpagesize=20000"})
        return r.json()["value"]

    def dv_create(self, entity_set: str, **fields: Any) -> str:
        r = self._dv("POST", f"{self.dv_api}/{entity_set}", json=fields, headers={"Prefer": "return=representation"})
        assert r.status_code == 201, r.text
        pk = {
            "accounts": "accountid",
            "contacts": "contactid",
            "products": "productid",
            "transactioncurrencies": "transactioncurrencyid",
            "uomschedules": "uomscheduleid",
            "uoms": "uomid",
            "opportunities": "opportunityid",
        }[entity_set]
        return r.json()[pk].lower()

    def dv_get(self, entity_set: str, rid: str) -> dict[str, Any] | None:
        r = self._dv("GET", f"{self.dv_api}/{entity_set}({rid})")
        return None if r.status_code == 404 else r.json()

    def dv_patch(self, entity_set: str, rid: str, **fields: Any) -> None:
        r = self._dv("PATCH", f"{self.dv_api}/{entity_set}({rid})", json=fields, headers={"If-Match": "*"})
        assert r.status_code in (200, 204), r.text

    def dv_all(self, entity_set: str) -> list[dict[str, Any]]:
        r = self._dv("GET", f"{self.dv_api}/{entity_set}", headers={"Prefer": "odata.maxpagesize=5000"})
        return r.json()["value"]

    def dv_count(self, entity_set: str, filter_: str) -> int:
        url: str | None = f"{self.dv_api}/{entity_set}"
        params: dict[str, str] | None = {"$filter": filter_, "$select": "name"}
        total = 0
        while url:
            r = self._dv("GET", url, params=params, headers={"Prefer": "odata.maxpagesize=5000"})
            assert r.status_code == 200, r.text
            total += len(r.json()["value"])
            url, params = r.json().get("@odata.nextLink"), None
        return total

    def seed(self, which: str, base_url: str, entity: str, count: int, prefix: str) -> None:
        r = self.http.post(
            f"{base_url}/_sim/seed", json={"entity": entity, "count": count, "prefix": prefix}, timeout=60
        )
        assert r.status_code == 200, r.text
