"""BusinessCentralClient against the in-process BC simulator (auth=None, ephemeral port)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from local.bc_sim import create_app
from shared.config import LOCAL_TENANT_ID
from shared.connectors import BusinessCentralClient, _overlap
from shared.domain.model import WriteOp
from shared.errors import PreconditionFailedError, TransientError
from tests.shared.connectors.sim_helpers import FakeCredential, LosingProxy, Sim

ENV_PATH = f"/v2.0/{LOCAL_TENANT_ID}/Production/api/v2.0"


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    s = await Sim(create_app(auth=None)).start()
    yield s
    await s.close()


def client_for(base: str, **kw: Any) -> BusinessCentralClient:
    kw.setdefault("retry_backoff_base", 0.05)
    return BusinessCentralClient(base + ENV_PATH, FakeCredential(), **kw)


@pytest.fixture
async def bc(sim: Sim) -> AsyncIterator[BusinessCentralClient]:
    client = client_for(sim.base)
    yield client
    await client.aclose()


async def all_records(bc: BusinessCentralClient, entity: str = "customers", **kw: Any) -> list[Any]:
    out = []
    async for page in bc.list_records(entity, **kw):
        out += page
    return out


async def test_full_read_of_12345_rows_in_fewest_calls(sim: Sim, bc: BusinessCentralClient) -> None:
    await sim.seed("customers", 12345)
    await bc.company_id()
    await sim.reset_stats()
    records = await all_records(bc, select=["displayName", "number"])
    assert len(records) == 12345 and len({r.id for r in records}) == 12345
    assert bc.calls.by_kind["read"] == math.ceil(12345 / 20000) == 1
    assert (await sim.stats())["requests"] == 1
    r = records[0]
    assert (
        r.etag
        and r.modified_on is not None
        and set(r.fields) == {"id", "displayName", "number", "lastModifiedDateTime"}
    )
    # smaller pages: exactly ceil(n / pagesize) calls, nextLink followed
    small = client_for(sim.base, page_size=5000)
    assert len(await all_records(small)) == 12345
    assert small.calls.by_kind["read"] == math.ceil(12345 / 5000)
    await small.aclose()


async def test_1000_creates_in_10_batches_then_update_and_delete(sim: Sim, bc: BusinessCentralClient) -> None:
    ops = [WriteOp("create", f"r{i}", fields={"displayName": f"C {i}", "number": f"W{i:05d}"}) for i in range(1000)]
    results = await bc.write_many("customers", ops)
    assert [r.ref for r in results] == [o.ref for o in ops] and all(r.ok for r in results)
    assert bc.calls.by_kind["write"] == 10
    assert all(r.record and r.record.etag and r.record.fields["number"] == f"W{i:05d}" for i, r in enumerate(results))
    rows = {r.fields["number"]: r for r in await all_records(bc)}
    assert len(rows) == 1000
    # updates with the fresh ETags, deletes unconditional
    upd = [WriteOp("update", f"u{i}", id=results[i].record.id, etag=results[i].record.etag,  # type: ignore[union-attr]
                   fields={"displayName": "renamed"}) for i in range(5)]  # fmt: skip
    dels = [WriteOp("delete", f"d{i}", id=results[i].record.id) for i in range(5, 8)]  # type: ignore[union-attr]
    again = await bc.write_many("customers", [*upd, *dels])
    assert all(r.ok for r in again)
    assert again[0].record is not None and again[0].record.fields["displayName"] == "renamed"
    assert len(await all_records(bc)) == 997


async def test_stale_etag_409_fails_only_that_record(sim: Sim, bc: BusinessCentralClient) -> None:
    ids = (await sim.seed("customers", 3))["ids"]
    current = await bc.get_many("customers", ids)
    stale = 'W/"JzE5OzEyMzQ1Njc4OTAxMjM0NTY3ODk7MDA7Jw=="'
    ops = [
        WriteOp("update", "a", id=ids[0], etag=current[ids[0]].etag, fields={"displayName": "A"}),
        WriteOp("update", "b", id=ids[1], etag=stale, fields={"displayName": "B"}),
        WriteOp("update", "c", id=ids[2], fields={"displayName": "C"}),  # no etag: If-Match *
    ]
    results = await bc.write_many("customers", ops)
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, PreconditionFailedError) and results[1].error.code
    after = await bc.get_many("customers", ids)
    assert [after[i].fields["displayName"] for i in ids] == ["A", current[ids[1]].fields["displayName"], "C"]


async def test_batch_with_one_bad_row_reports_exactly_that_row(sim: Sim, bc: BusinessCentralClient) -> None:
    ops = [WriteOp("create", f"r{i}", fields={"displayName": f"X {i}", "number": f"B{i:03d}"}) for i in range(50)]
    ops[17] = WriteOp("create", "bad", fields={"displayName": "dup", "number": "B003"})  # duplicate number
    results = await bc.write_many("customers", ops)
    failed = [r.ref for r in results if not r.ok]
    assert failed == ["bad"]
    assert bc.calls.by_kind["write"] == 1
    assert len(await all_records(bc)) == 49


async def test_429_storm_ridden_out_without_lost_or_duplicated_writes(sim: Sim, bc: BusinessCentralClient) -> None:
    await bc.company_id()
    await sim.fault(status=429, count=6, retryAfter=1)
    ops = [WriteOp("create", f"r{i}", fields={"displayName": f"S {i}", "number": f"S{i:04d}"}) for i in range(300)]
    results = await bc.write_many("customers", ops)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    numbers = sorted(r.fields["number"] for r in await all_records(bc))
    assert numbers == sorted(f"S{i:04d}" for i in range(300))  # none lost, none twice
    assert bc.calls.throttled == 6 and bc.calls.retries == 6
    assert (await sim.stats())["throttled"] == 6


async def test_lost_answer_of_a_create_batch_leaves_one_row_each(sim: Sim) -> None:
    proxy = await LosingProxy(sim.base, lambda r: r.method == "POST" and r.path.endswith("$batch")).start()
    bc = client_for(proxy.base)
    try:
        ops = [WriteOp("create", f"r{i}", fields={"displayName": f"K {i}", "number": f"K{i:03d}"}) for i in range(40)]
        results = await bc.write_many("customers", ops)
        assert proxy.lost == 1
        assert all(r.ok for r in results)
        assert all(r.record is not None and r.record.fields["number"] == f"K{i:03d}" for i, r in enumerate(results))
        numbers = [r.fields["number"] for r in await all_records(bc)]
        assert sorted(numbers) == [f"K{i:03d}" for i in range(40)]  # exactly one row each
        # without a natural key the create is not re-sent: reported as transient, still no duplicate
        proxy.lose, proxy.lost = 1, 0
        results = await bc.write_many("customers", [WriteOp("create", "nokey", fields={"displayName": "N"})])
        assert not results[0].ok and isinstance(results[0].error, TransientError)
        names = [r.fields["displayName"] for r in await all_records(bc)]
        assert names.count("N") == 1
    finally:
        await bc.aclose()
        await proxy.close()


async def test_changes_since_cursor_with_overlap(sim: Sim) -> None:
    bc = client_for(sim.base, overlap_seconds=0.5)
    ids = (await sim.seed("customers", 30))["ids"]
    await asyncio.sleep(0.6)
    await bc.write_many("customers", [WriteOp("update", "u0", id=ids[0], fields={"displayName": "boundary"})])
    pages = [p async for p in bc.iter_changes("customers", None)]
    assert pages[-1].is_last and pages[-1].next_cursor and not pages[-1].deleted_ids
    assert sum(len(p.records) for p in pages) == 30
    cursor = pages[-1].next_cursor
    stamp, remembered = _overlap.split_cursor(cursor)
    assert stamp == max(r.fields["lastModifiedDateTime"] for p in pages for r in p.records)
    assert len(remembered) == 1  # the boundary row: the only one within the overlap of the newest stamp
    await asyncio.sleep(0.6)
    await bc.write_many("customers", [WriteOp("update", "u3", id=ids[3], fields={"displayName": "changed"})])
    # A cursor of the timestamp alone (as written before the overlap memory) re-delivers the overlap window
    legacy = [r.id for p in [p async for p in bc.iter_changes("customers", stamp)] for r in p.records]
    assert legacy == [ids[0], ids[3]]
    changed = [p async for p in bc.iter_changes("customers", cursor)]
    got = [r for p in changed for r in p.records]
    # the boundary row comes back in the overlap window with the stamp already handed over: dropped
    assert [r.id for r in got] == [ids[3]] and got[0].fields["displayName"] == "changed"
    assert _overlap.split_cursor(changed[-1].next_cursor)[0] == got[0].fields["lastModifiedDateTime"]
    await asyncio.sleep(0.6)
    same = [p async for p in bc.iter_changes("customers", changed[-1].next_cursor)]
    assert [r.id for p in same for r in p.records] == []  # only the overlap, already delivered: nothing new
    assert same[-1].next_cursor == changed[-1].next_cursor
    await bc.write_many("customers", [WriteOp("update", "u3b", id=ids[3], fields={"displayName": "again"})])
    again = [r for p in [p async for p in bc.iter_changes("customers", same[-1].next_cursor)] for r in p.records]
    assert [(r.id, r.fields["displayName"]) for r in again] == [(ids[3], "again")]  # a new version comes
    await bc.aclose()


async def test_get_many_chunks(sim: Sim, bc: BusinessCentralClient) -> None:
    await sim.seed("customers", 1500)
    all_ids = [r.id for r in await all_records(bc)]
    before = bc.calls.by_kind["read"]
    wanted = [*all_ids[:1000], "00000000-0000-0000-0000-000000000001"]
    found = await bc.get_many("customers", [w.upper() for w in wanted])
    assert set(found) == set(all_ids[:1000])
    calls = bc.calls.by_kind["read"] - before
    assert calls <= 6, calls  # ~190 GUIDs per GET under 8 KB URLs


async def test_webhook_subscription_lifecycle(sim: Sim, bc: BusinessCentralClient) -> None:
    async def receiver(request: web.Request) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None:
            return web.Response(text=token, content_type="text/plain")
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/api/webhooks/businesscentral", receiver)
    hook = await Sim(app).start()
    try:
        company = await bc.company_id()
        sub = await bc.create_subscription(
            f"{hook.base}/api/webhooks/businesscentral", f"companies({company})/customers", "state-1"
        )
        assert sub["subscriptionId"] and sub["@odata.etag"]
        listed = await bc.list_subscriptions()
        assert [s["subscriptionId"] for s in listed] == [sub["subscriptionId"]]
        renewed = await bc.renew_subscription(sub["subscriptionId"], sub["@odata.etag"])
        assert renewed["expirationDateTime"] >= sub["expirationDateTime"]
        await bc.delete_subscription(sub["subscriptionId"])
        await bc.delete_subscription(sub["subscriptionId"])  # idempotent
        assert await bc.list_subscriptions() == []
    finally:
        await hook.close()
