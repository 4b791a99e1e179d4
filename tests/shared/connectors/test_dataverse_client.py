"""DataverseClient against the in-process Dataverse simulator (auth=None, ephemeral port)."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from local.dv_sim import create_app
from shared.connectors import DataverseClient
from shared.connectors.dataverse import columns_missing_from
from shared.domain.model import WriteOp
from shared.errors import PermanentError, PreconditionFailedError
from tests.shared.connectors.sim_helpers import FakeCredential, LosingProxy, Sim

API = "/api/data/v9.2"
NS = uuid.UUID("6f1c1a62-0000-4000-8000-000000000001")


def dv_id(n: int, mapping: str = "CUSTOMER") -> str:
    return str(uuid.uuid5(NS, f"{mapping}:{n}"))  # the engine's deterministic keys


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    s = await Sim(create_app(auth=None)).start()
    yield s
    await s.close()


def client_for(base: str, **kw: Any) -> DataverseClient:
    kw.setdefault("retry_backoff_base", 0.05)
    return DataverseClient(base + API, FakeCredential(), **kw)


@pytest.fixture
async def dv(sim: Sim) -> AsyncIterator[DataverseClient]:
    client = client_for(sim.base)
    yield client
    await client.aclose()


async def all_records(dv: DataverseClient, entity: str = "accounts", **kw: Any) -> list[Any]:
    out = []
    async for page in dv.list_records(entity, **kw):
        out += page
    return out


def creates(n: int, *, start: int = 0, prefix: str = "Acc") -> list[WriteOp]:
    return [
        WriteOp("create", f"r{i}", id=dv_id(i), fields={"name": f"{prefix} {i}", "accountnumber": f"{prefix}{i:05d}"})
        for i in range(start, start + n)
    ]


async def test_full_read_of_12345_rows_in_fewest_calls(sim: Sim, dv: DataverseClient) -> None:
    await sim.seed("accounts", 12345)
    await sim.reset_stats()
    records = await all_records(dv, select=["name"])
    assert len(records) == 12345 and len({r.id for r in records}) == 12345
    assert dv.calls.by_kind["read"] == math.ceil(12345 / 5000) == 3
    assert (await sim.stats())["requests"] == 3
    assert records[0].etag and records[0].modified_on is not None
    assert set(records[0].fields) == {"name", "accountid", "modifiedon"}


async def test_1000_creates_in_one_call_with_the_given_keys(sim: Sim, dv: DataverseClient) -> None:
    ops = creates(1000)
    results = await dv.write_many("accounts", ops)
    assert all(r.ok for r in results) and [r.ref for r in results] == [o.ref for o in ops]
    assert dv.calls.by_kind["write"] == 1
    assert [r.record.id for r in results] == [o.id for o in ops]  # type: ignore[union-attr]
    assert {r.id for r in await all_records(dv)} == {o.id for o in ops}
    # 1,000 unconditional updates: one UpdateMultiple
    upd = [WriteOp("update", f"u{i}", id=dv_id(i), fields={"telephone1": "555"}) for i in range(1000)]
    assert all(r.ok for r in await dv.write_many("accounts", upd))
    assert dv.calls.by_kind["write"] == 2
    assert {r.fields["telephone1"] for r in await all_records(dv, select=["telephone1"])} == {"555"}


async def test_same_create_multiple_twice_leaves_one_row_each(sim: Sim, dv: DataverseClient) -> None:
    ops = creates(300)
    first = await dv.write_many("accounts", ops)
    second = await dv.write_many("accounts", ops)  # e.g. a redelivered Service Bus message
    assert all(r.ok for r in first) and all(r.ok for r in second)
    assert second[0].record is not None and second[0].record.etag  # verified by reading the row back
    assert len(await all_records(dv)) == 300


async def test_lost_answer_of_create_multiple_is_retried_and_leaves_one_row(sim: Sim) -> None:
    proxy = await LosingProxy(sim.base, lambda r: r.path.endswith("CreateMultiple")).start()
    dv = client_for(proxy.base)
    try:
        ops = creates(500)
        results = await dv.write_many("accounts", ops)
        assert proxy.lost == 1 and all(r.ok for r in results)
        rows = await all_records(dv)
        assert sorted(r.id for r in rows) == sorted(o.id for o in ops)  # type: ignore[type-var]
    finally:
        await dv.aclose()
        await proxy.close()


async def test_429_storm_ridden_out_without_lost_or_duplicated_writes(sim: Sim, dv: DataverseClient) -> None:
    await sim.fault(status=429, count=4, retryAfter=1)
    ops = creates(2500)
    results = await dv.write_many("accounts", ops)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    rows = await all_records(dv)
    assert sorted(r.id for r in rows) == sorted(o.id for o in ops)  # type: ignore[type-var]
    assert dv.calls.throttled == 4 and (await sim.stats())["throttled"] == 4


async def test_412_fails_only_that_record(sim: Sim, dv: DataverseClient) -> None:
    ids = (await sim.seed("accounts", 3))["ids"]
    current = await dv.get_many("accounts", ids)
    await dv.write_many("accounts", [WriteOp("update", "x", id=ids[1], fields={"name": "moved on"})])
    ops = [WriteOp("update", f"u{i}", id=ids[i], etag=current[ids[i]].etag, fields={"name": f"N{i}"}) for i in range(3)]
    results = await dv.write_many("accounts", ops)
    assert [r.ok for r in results] == [True, False, True]
    err = results[1].error
    assert isinstance(err, PreconditionFailedError) and err.code == "0x80060882"
    assert results[0].record is not None and results[0].record.etag != current[ids[0]].etag
    after = await dv.get_many("accounts", ids)
    assert [after[i].fields["name"] for i in ids] == ["N0", "moved on", "N2"]
    assert dv.calls.by_kind["write"] == 2  # the three conditional updates went as one $batch


async def test_bulk_call_with_one_bad_row_reports_exactly_that_row(sim: Sim, dv: DataverseClient) -> None:
    ops = creates(200)
    ops[123] = WriteOp("create", "bad", id=dv_id(9999), fields={"name": "x", "nosuchcolumn": 1})
    results = await dv.write_many("accounts", ops)
    assert [r.ref for r in results if not r.ok] == ["bad"]
    assert isinstance(results[123].error, PermanentError) and results[123].error.code
    assert len(await all_records(dv)) == 199
    assert dv.calls.by_kind["write"] == 2  # the failed CreateMultiple + one $batch for per-row outcomes


async def test_deletes_and_lookup_binds(sim: Sim, dv: DataverseClient) -> None:
    account = (await dv.write_many("accounts", creates(1)))[0].record
    assert account is not None
    bind = {"parentcustomerid_account@odata.bind": f"/accounts({account.id})"}
    contact = WriteOp("create", "c", id=dv_id(1, "CONTACT"), fields={"lastname": "Doe", **bind})
    res = await dv.write_many("contacts", [contact])
    assert res[0].ok
    got = (await dv.get_many("contacts", [contact.id]))[contact.id]  # type: ignore[index]
    assert got.fields["_parentcustomerid_value"] == account.id
    dels = await dv.write_many(
        "contacts", [WriteOp("delete", "d1", id=contact.id), WriteOp("delete", "d2", id=dv_id(77, "CONTACT"))]
    )
    assert [r.ok for r in dels] == [True, True]  # a missing target counts as deleted
    assert await dv.get_many("contacts", [contact.id]) == {}  # type: ignore[list-item]


async def test_bulk_unsupported_table_falls_back_to_batch(sim: Sim, dv: DataverseClient) -> None:
    await sim.control("POST", "/_sim/config", {"bulkUnsupported": ["contacts"]})
    ops = [WriteOp("create", f"c{i}", id=dv_id(i, "CONTACT"), fields={"lastname": f"L{i}"}) for i in range(20)]
    assert all(r.ok for r in await dv.write_many("contacts", ops[:10]))
    assert dv.calls.by_kind["write"] == 2  # the refused CreateMultiple + a $batch
    assert all(r.ok for r in await dv.write_many("contacts", ops[10:]))
    assert dv.calls.by_kind["write"] == 3  # remembered: straight to $batch
    assert len(await all_records(dv, "contacts")) == 20


async def test_change_tracking_updates_deletions_and_expiry(sim: Sim, dv: DataverseClient) -> None:
    await sim.seed("accounts", 12)
    pages = [p async for p in dv.iter_changes("accounts", None, select=["name"])]
    assert pages[-1].is_last and sum(len(p.records) for p in pages) == 12
    delta = pages[-1].next_cursor
    assert delta and "deltatoken" in delta.lower()
    rows = [r for p in pages for r in p.records]
    await dv.write_many("accounts", [
        WriteOp("update", "u", id=rows[0].id, fields={"name": "changed"}),
        WriteOp("delete", "d", id=rows[1].id),
        *creates(1, start=500),
    ])  # fmt: skip
    changes = [p async for p in dv.iter_changes("accounts", delta)]
    recs = {r.id: r for p in changes for r in p.records}
    assert set(recs) == {rows[0].id, dv_id(500)} and recs[rows[0].id].fields["name"] == "changed"
    assert [d for p in changes for d in p.deleted_ids] == [rows[1].id]
    new_delta = changes[-1].next_cursor
    assert new_delta and new_delta != delta
    quiet = [p async for p in dv.iter_changes("accounts", new_delta)]
    assert sum(len(p.records) + len(p.deleted_ids) for p in quiet) == 0 and quiet[-1].next_cursor
    await sim.control("POST", "/_sim/deltatokens/expire")
    expired = [p async for p in dv.iter_changes("accounts", new_delta)]
    assert len(expired) == 1 and expired[0].full_resync_required and expired[0].is_last


async def test_a_delta_link_lacking_a_column_now_selected_reads_the_changed_rows_again(
    sim: Sim, dv: DataverseClient
) -> None:
    """A field added or enabled after the delta link was made: its column must arrive, not read as empty."""
    await sim.seed("accounts", 3, fields={"telephone1": "+1 1"})
    pages = [p async for p in dv.iter_changes("accounts", None, select=["name"])]
    delta, rows = pages[-1].next_cursor, [r for p in pages for r in p.records]
    assert delta and "telephone1" not in rows[0].fields
    await dv.write_many("accounts", [WriteOp("update", "u", id=rows[0].id, fields={"name": "edited"})])
    reads = dv.calls.by_kind["read"]
    changes = [p async for p in dv.iter_changes("accounts", delta, select=["name", "telephone1"])]
    [row] = [r for p in changes for r in p.records]
    assert row.id == rows[0].id and row.fields["name"] == "edited" and row.fields["telephone1"] == "+1 1"
    assert dv.calls.by_kind["read"] - reads == 2  # the delta page, then its changed rows with every column
    assert changes[-1].next_cursor and changes[-1].next_cursor != delta
    same = [p async for p in dv.iter_changes("accounts", delta, select=["name"])]  # nothing missing: no re-read
    assert dv.calls.by_kind["read"] - reads == 3 and "telephone1" not in same[-1].records[0].fields


def test_columns_missing_from_a_delta_links_select() -> None:
    link = "https://org/api/data/v9.2/accounts?%24select=name%2Caccountid&%24deltatoken=919042%2108"
    assert columns_missing_from(link, ["name", "telephone1", "accountid"]) == ["telephone1"]
    assert columns_missing_from(link, ["Name", "accountid"]) == []
    assert columns_missing_from("https://org/api/data/v9.2/accounts?$deltatoken=1", ["telephone1"]) == []
    assert columns_missing_from(link, None) == []


async def test_the_change_feed_hands_out_service_pages_merged_up_to_its_page_records(sim: Sim) -> None:
    await sim.seed("accounts", 25)
    dv = client_for(sim.base, page_size=4, change_page_records=10)  # the service answers 4 rows a page
    try:
        pages = [p async for p in dv.iter_changes("accounts", None, select=["name"])]
        assert [len(p.records) for p in pages] == [12, 12, 1]  # 3 service pages each, the rest at the end
        assert [p.is_last for p in pages] == [False, False, True] and pages[-1].next_cursor
        assert len({r.id for p in pages for r in p.records}) == 25
        assert dv.calls.by_kind["read"] == 7  # the same service pages as before: only handed out together
    finally:
        await dv.aclose()


async def test_a_table_without_change_tracking_is_read_by_modifiedon(sim: Sim, dv: DataverseClient) -> None:
    await sim.control("POST", "/_sim/config", {"untracked": ["accounts"]})
    await sim.seed("accounts", 5)
    pages = [p async for p in dv.iter_changes("accounts", None, select=["name"])]
    rows = [r for p in pages for r in p.records]
    assert len(rows) == 5 and pages[-1].is_last
    cursor = pages[-1].next_cursor
    assert cursor and cursor.startswith("modifiedon:") and "accounts" in dv.untracked
    await dv.write_many("accounts", [WriteOp("update", "u", id=rows[0].id, fields={"name": "changed"})])
    changes = [r for p in [p async for p in dv.iter_changes("accounts", cursor)] for r in p.records]
    # whole seconds: the last second is read again (the engine's echo check drops the unchanged rows)
    assert rows[0].id in {r.id for r in changes}
    assert {r.id: r for r in changes}[rows[0].id].fields["name"] == "changed"


async def test_a_modifiedon_watermark_equal_to_a_rows_stamp_reads_the_row_again(sim: Sim, dv: DataverseClient) -> None:
    """Whole seconds: a row edited in the watermark's second carries the watermark's stamp; ``ge`` hands it over."""
    await sim.control("POST", "/_sim/config", {"untracked": ["accounts"]})
    await sim.seed("accounts", 3)
    rows = [r for p in [p async for p in dv.iter_changes("accounts", None, select=["name"])] for r in p.records]
    await dv.write_many("accounts", [WriteOp("update", "u", id=rows[0].id, fields={"name": "edited"})])
    stamp = (await dv.get_many("accounts", [rows[0].id]))[rows[0].id].modified_on
    assert stamp is not None and stamp.microsecond == 0
    watermark = "modifiedon:" + stamp.strftime("%Y-%m-%dT%H:%M:%SZ")  # equal to the edited row's stamp
    pages = [p async for p in dv.iter_changes("accounts", watermark, select=["name"])]
    again = {r.id: r for p in pages for r in p.records}
    assert again[rows[0].id].fields["name"] == "edited" and again[rows[0].id].modified_on == stamp
    assert pages[-1].next_cursor == watermark  # nothing newer: the watermark stays in that second


async def test_get_many_chunks_and_missing_ids(sim: Sim, dv: DataverseClient) -> None:
    ids = (await sim.seed("accounts", 1000))["ids"]
    found = await dv.get_many("accounts", [*ids, dv_id(123456)])
    assert set(found) == set(ids)
    assert dv.calls.by_kind["read"] <= 6, dv.calls.by_kind


async def test_echo_markers_and_dop_hint(sim: Sim) -> None:
    await sim.control("POST", "/_sim/config", {"dopHint": 9})
    proxy = await LosingProxy(sim.base, lambda r: False, lose=0).start()
    dv = client_for(proxy.base, tag="my-tag")
    try:
        await dv.write_many("accounts", creates(2))
        await dv.write_many("accounts", [WriteOp("update", "u", id=dv_id(0), etag="*", fields={"name": "n"})])
        writes = [(m, p, h) for m, p, h in proxy.seen if m != "GET"]
        assert len(writes) == 2
        for _, _path, headers in writes:
            assert headers["MSCRM.BypassCustomPluginExecution"] == "false"
        assert "tag=my-tag" in writes[0][1]  # CreateMultiple?tag=...
        assert dv.concurrency_limit == 9  # followed x-ms-dop-hint
    finally:
        await dv.aclose()
        await proxy.close()
