"""A deliberately naive per-record sync, the way BC's integration job queue works: for each changed record
read it, find its counterpart (coupling row, then GET by id or look it up), write it (PATCH or POST), and
write one coupling row. One HTTP call and one table operation per step, one record at a time.

Never used by the service: it exists only so the benchmark can put the engine's figures next to it, against
the same simulators, the same Azurite and tokens from the same credential.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.env import BenchEnv
from shared.config import STORAGE_AUDIENCE
from shared.stores.tables import OpCounter, build_service_client

# CUSTOMER's mapped fields (BC name, Dataverse name), copied as they are: a baseline needs no transforms.
FIELDS = [
    ("displayName", "name"),
    ("phoneNumber", "telephone1"),
    ("email", "emailaddress1"),
    ("website", "websiteurl"),
    ("addressLine1", "address1_line1"),
    ("city", "address1_city"),
    ("postalCode", "address1_postalcode"),
    ("country", "address1_country"),
]
TO_DV_ONLY = [("number", "accountnumber")]


@dataclass
class BaselineCounts:
    bc: int = 0
    dv: int = 0
    records_written: int = 0
    by_step: dict[str, int] = field(default_factory=dict)


class NaiveSync:
    """Per-record sync of CUSTOMER over plain aiohttp (one call at a time)."""

    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        s = env.settings
        self.bc_root = s.bc_api_root
        self.dv_root = s.dataverse_api_root
        self.counts = BaselineCounts()
        self.table_ops = OpCounter()
        self._service = build_service_client(
            endpoint=s.tables_endpoint,
            credential=env.credentials.azure,  # tables: the managed identity, as the service
            counter=self.table_ops,
            ca_file=s.authority_ca,
            audience=STORAGE_AUDIENCE,
        )
        self._table = self._service.get_table_client(f"baseline{uuid.uuid4().hex[:10]}")
        self._company: str | None = None
        self.watermarks: dict[str, str | None] = {"bc": None, "dv": None}

    async def open(self) -> None:
        await self._table.create_table()
        self.table_ops.reset()

    async def close(self) -> None:
        await self._table.close()
        await self._service.close()

    # ------------------------------------------------------------------ HTTP, one call at a time
    async def _headers(self, side: str) -> dict[str, str]:
        audience = self.env.settings.bc_audience if side == "bc" else self.env.settings.dataverse_audience
        token = await self.env.credential.get_token(f"{audience}/.default")
        return {"Authorization": f"Bearer {token.token}", "Accept": "application/json"}

    async def _call(self, side: str, method: str, url: str, step: str, **kw: Any) -> Any:
        headers = {**await self._headers(side), **kw.pop("headers", {})}
        for _ in range(100):
            setattr(self.counts, side, getattr(self.counts, side) + 1)
            self.counts.by_step[step] = self.counts.by_step.get(step, 0) + 1
            async with self.env.session.request(method, url, headers=headers, **kw) as r:
                if r.status == 429:  # the job queue waits and tries again, as told
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                    continue
                if r.status >= 300:
                    raise RuntimeError(f"baseline {method} {url}: {r.status} {(await r.text())[:200]}")
                return await r.json() if r.content_type == "application/json" else None
        raise RuntimeError(f"baseline {method} {url}: still throttled")

    async def _customers_url(self) -> str:
        if self._company is None:
            body = await self._call("bc", "GET", f"{self.bc_root}/companies", "companies")
            self._company = body["value"][0]["id"]
        return f"{self.bc_root}/companies({self._company})/customers"

    async def _list_ids(self, side: str) -> tuple[list[str], str | None]:
        """The changed records' ids since the side's watermark (paged, one call per page)."""
        since = self.watermarks[side]
        if side == "bc":
            url: str | None = await self._customers_url()
            params = {"$select": "id,lastModifiedDateTime", "$orderby": "lastModifiedDateTime asc"}
            if since:
                params["$filter"] = f"lastModifiedDateTime gt {since}"
            key, stamp = "id", "lastModifiedDateTime"
        else:
            url = f"{self.dv_root}/accounts"
            params = {"$select": "accountid,modifiedon", "$orderby": "modifiedon asc"}
            if since:
                params["$filter"] = f"modifiedon gt {since}"
            key, stamp = "accountid", "modifiedon"
        ids: list[str] = []
        newest = since
        first = True
        while url:
            body = await self._call(side, "GET", url, "list", params=params if first else None)
            first = False
            for row in body["value"]:
                ids.append(row[key])
                newest = max(newest or "", row[stamp])
            url = body.get("@odata.nextLink")
        return ids, newest

    # ------------------------------------------------------------------ the per-record loop
    async def tick(self, side: str) -> int:
        """One job-queue run for records changed on ``side``: each is read, its counterpart found and written,
        and its coupling row written, sequentially. Returns records processed."""
        ids, newest = await self._list_ids(side)
        for rid in ids:
            if side == "bc":
                await self._bc_to_dv(rid)
            else:
                await self._dv_to_bc(rid)
        self.watermarks[side] = newest
        return len(ids)

    async def _coupling_by_bc(self, bc_id: str) -> str | None:
        try:
            return str((await self._table.get_entity("pair", bc_id))["DvId"])
        except Exception:
            return None

    async def _coupling_by_dv(self, dv_id: str) -> str | None:
        async for row in self._table.query_entities(f"PartitionKey eq 'pair' and DvId eq '{dv_id}'"):
            return str(row["RowKey"])
        return None

    async def _couple(self, bc_id: str, dv_id: str) -> None:
        await self._table.upsert_entity({"PartitionKey": "pair", "RowKey": bc_id, "DvId": dv_id})

    async def _bc_to_dv(self, bc_id: str) -> None:
        cust_url = await self._customers_url()
        rec = await self._call("bc", "GET", f"{cust_url}({bc_id})", "get record")
        dv_id = await self._coupling_by_bc(bc_id)
        body = {dv: rec.get(bc) for bc, dv in FIELDS + TO_DV_ONLY}
        if dv_id is not None:
            current = await self._call("dv", "GET", f"{self.dv_root}/accounts({dv_id})", "get counterpart")
            if all(current.get(k) == v for k, v in body.items()):
                return  # unchanged (also: our own write coming back)
            await self._call("dv", "PATCH", f"{self.dv_root}/accounts({dv_id})", "write", json=body,
                             headers={"If-Match": "*"})  # fmt: skip
        else:
            dv_id = str(uuid.uuid4())
            await self._call("dv", "POST", f"{self.dv_root}/accounts", "write", json={"accountid": dv_id, **body})
        self.counts.records_written += 1
        await self._couple(bc_id, dv_id)

    async def _dv_to_bc(self, dv_id: str) -> None:
        cust_url = await self._customers_url()
        rec = await self._call("dv", "GET", f"{self.dv_root}/accounts({dv_id})", "get record")
        bc_id = await self._coupling_by_dv(dv_id)
        body = {bc: rec.get(dv) or "" for bc, dv in FIELDS}
        if bc_id is not None:
            current = await self._call("bc", "GET", f"{cust_url}({bc_id})", "get counterpart")
            if all((current.get(k) or "") == v for k, v in body.items()):
                return
            await self._call("bc", "PATCH", f"{cust_url}({bc_id})", "write", json=body, headers={"If-Match": "*"})
        else:
            created = await self._call("bc", "POST", cust_url, "write", json=body)
            bc_id = str(created["id"])
        self.counts.records_written += 1
        await self._couple(bc_id, dv_id)


@dataclass
class BaselinePhase:
    name: str
    records: int
    seconds: float
    bc: int
    dv: int
    table_ops: int
    bc_throttled: int = 0
    dv_throttled: int = 0
    cpu_seconds: float = 0.0  # process CPU of the baseline's own work (same process as the engine's runs)

    def as_json(self) -> dict[str, Any]:
        r = self.records
        return {
            "name": self.name,
            "records": r,
            "seconds": round(self.seconds, 3),
            "cpuSeconds": round(self.cpu_seconds, 3),
            "cpuMsPerRecord": round(self.cpu_seconds * 1000 / r, 4) if r else None,
            "recordsPerSecond": round(r / self.seconds, 1) if self.seconds and r else None,
            "bcRequests": self.bc,
            "dvRequests": self.dv,
            "tableOps": self.table_ops,
            "bcThrottled": self.bc_throttled,
            "dvThrottled": self.dv_throttled,
            "bcRequestsPerRecord": round(self.bc / r, 4) if r else None,
            "dvRequestsPerRecord": round(self.dv / r, 4) if r else None,
            "tableOpsPerRecord": round(self.table_ops / r, 4) if r else None,
        }


async def baseline_scenario(
    env: BenchEnv, n: int, *, label: str, share: float = 0.1, watch: list[NaiveSync] | None = None
) -> dict[str, Any]:
    """The engine scenario's phases, per record: full sync (create) both ways, 10% updates, no-change tick."""
    from bench.engine_runs import seed, update_share

    await seed(env, n, n)
    naive = NaiveSync(env)
    await naive.open()
    if watch is not None:
        watch.append(naive)  # the progress sampler of the throttled run reads its counters
    phases: list[BaselinePhase] = []

    async def phase(name: str, records: int | None = None) -> BaselinePhase:
        bc0, dv0, t0 = naive.counts.bc, naive.counts.dv, naive.table_ops.count
        s0 = await env.snapshot()
        start, cpu0 = time.perf_counter(), time.process_time()
        done = await naive.tick("bc") + await naive.tick("dv")
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
        s1 = await env.snapshot()
        d = s1.minus(s0)
        # The simulators' counts and the baseline's own must agree (nothing else talks to them now).
        # The simulators' counts and the baseline's own must agree (nothing else talks to them now; 429s
        # are answered requests too, so they count on both sides).
        if not d["bcThrottled"] and not d["dvThrottled"]:
            assert d["bcRequests"] == naive.counts.bc - bc0 and d["dvRequests"] == naive.counts.dv - dv0, d
        p = BaselinePhase(name, done if records is None else records, seconds, d["bcRequests"], d["dvRequests"],
                          naive.table_ops.count - t0, d["bcThrottled"], d["dvThrottled"], cpu)  # fmt: skip
        phases.append(p)
        return p

    try:
        await phase(f"{label}: full sync, create + couple", records=2 * n)
        bc_new, dv_new = await update_share(env, share, "b1")
        await phase(f"{label}: incremental after 10% updates", records=len(bc_new) + len(dv_new))
        await phase(f"{label}: no-change incremental tick", records=0)
    finally:
        await naive.close()
    return {"n": n, "phases": [p.as_json() for p in phases], "_phases": phases}
