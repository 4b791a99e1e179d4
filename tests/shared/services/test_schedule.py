"""The timer's choice of due mappings: parents first, paused skipped, one job in flight per mapping."""

from __future__ import annotations

from datetime import timedelta

from shared.services.engine import Engine
from shared.services.schedule import start_due_syncs
from tests.fake_services import fake_engine


def _engine(**settings: object) -> Engine:
    return fake_engine(**settings)


async def test_due_mappings_start_in_dependency_order_once() -> None:
    e = _engine()
    # BC's prioritized list: users, currency, units, (option mappings the customers need), customers,
    # vendors, contacts, items, the rest.
    order = [
        "SALESPEOPLE",
        "CURRENCY",
        "UNIT OF MEASURE",
        "PAYMENT TERMS",
        "SHIPMENT METHOD",
        "CUSTOMER",
        "VENDOR",
        "CONTACT",
        "ITEM-PRODUCT",
        "OPPORTUNITY",
        "SALESORDER-ORDER",  # documents (#21): after their customers, items and currencies
        "POSTEDSALESINV-INV",
    ]
    assert list(await start_due_syncs(e)) == order
    msgs = e.publisher.take()  # type: ignore[attr-defined]
    assert [(m["kind"], m["mapping"]) for m in msgs] == [("mapping-sync", name) for name in order]
    assert await start_due_syncs(e) == {}  # queued jobs are in flight


async def test_not_due_until_the_interval_passed_and_paused_is_skipped() -> None:
    e = _engine()
    await start_due_syncs(e)
    for job in list(e.jobs.jobs.values()):  # type: ignore[attr-defined]
        await e.jobs.set_status(job.job_id, "succeeded")
    assert await start_due_syncs(e) == {}  # finished, but the 5-minute interval has not passed
    for job in e.jobs.jobs.values():  # type: ignore[attr-defined]
        job.created_at -= timedelta(minutes=6)
    await e.registry.update("CONTACT", state="paused")
    assert list(await start_due_syncs(e)) == ["CUSTOMER", "ITEM-PRODUCT"]


async def test_scheduled_sync_off_starts_nothing() -> None:
    e = _engine(SYNC_SCHEDULED_SYNC=False)
    assert await start_due_syncs(e) == {}
    assert e.publisher.take() == []  # type: ignore[attr-defined]
