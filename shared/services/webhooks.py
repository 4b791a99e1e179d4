"""Registration of the Business Central webhook subscriptions of the configured mappings: create missing
ones, renew those that expire within a day. Run by the timer (unless SYNC_SCHEDULED_SYNC=false) and by
``python -m shared.services.webhooks`` (the registration command)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import SyncError
from shared.services.engine import Engine, utcnow

log = logging.getLogger(__name__)
RENEW_BEFORE = timedelta(days=1)
# Learn "Working with webhooks in Dynamics 365 Business Central", supported APIs (API v2.0). `contacts` is
# not listed (its page allows change tracking, but the stricter reading follows the list): such mappings are
# synced by the scheduled incremental job only, and the timer's report says so.
BC_WEBHOOK_ENTITIES = frozenset(
    {
        "companyInformation", "countriesRegions", "currencies", "customerPaymentJournals", "customers",
        "dimensions", "dimensionValues", "employees", "generalLedgerEntries", "itemCategories", "items",
        "journals", "paymentMethods", "paymentTerms", "purchaseInvoices", "salesCreditMemos", "salesInvoices",
        "salesOrders", "salesQuotes", "shipmentMethods", "taxAreas", "taxGroups", "unitsOfMeasure", "vendors",
    }
)  # fmt: skip


def _expires(sub: dict[str, Any]) -> datetime | None:
    raw = sub.get("expirationDateTime")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


async def ensure_bc_subscriptions(engine: Engine, bc: Any) -> dict[str, str]:
    """``{resource: "created" | "renewed" | "ok" | "not supported: …" | "failed: <reason>"}`` for each running
    mapping's BC entity."""
    state = engine.settings.bc_webhook_client_state
    if not state:  # no subscription with a guessable clientState; health names the missing setting
        return {m.bc_entity: "failed: BC_WEBHOOK_CLIENT_STATE is not set" for m in await engine.registry.list()}
    url = engine.settings.public_base_url.rstrip("/") + "/api/webhooks/businesscentral"
    company = await bc.company_id()
    existing = {
        "/api/v2.0/" + s.get("resource", "").split("api/v2.0/")[-1].lstrip("/"): s
        for s in await bc.list_subscriptions()
        if s.get("notificationUrl") == url
    }
    out: dict[str, str] = {}
    for mapping in await engine.registry.list():
        if mapping.state != "running" or mapping.bc_api != "v2.0":
            continue  # custom API pages: their changes are picked up by the scheduled incremental syncs
        # The documented form (every Learn example): /api/v2.0/companies(<id>)/<entity>.
        resource = f"/api/v2.0/companies({company})/{mapping.bc_entity}"
        if mapping.bc_entity not in BC_WEBHOOK_ENTITIES:
            out[resource] = "not supported: scheduled sync only"  # e.g. contacts: not in BC's webhook list
            continue
        sub = existing.get(resource)
        try:
            if sub is None:
                await bc.create_subscription(url, resource, state)
                out[resource] = "created"
            elif (_expires(sub) or utcnow()) - utcnow() < RENEW_BEFORE:
                await bc.renew_subscription(
                    sub["subscriptionId"],
                    sub.get("@odata.etag", "*"),
                    notificationUrl=url,
                    resource=sub.get("resource"),
                    clientState=state,
                )
                out[resource] = "renewed"
            else:
                out[resource] = "ok"
        except SyncError as e:
            log.warning("BC subscription for %s: %s", resource, e)
            out[resource] = f"failed: {e.code or e.status}"
    return out


async def _main() -> None:
    from shared.bootstrap import get_runtime

    runtime = await get_runtime()
    try:
        for resource, state in (await ensure_bc_subscriptions(runtime.engine, runtime.bc)).items():
            print(f"{resource}: {state}")
    finally:
        await runtime.aclose()


if __name__ == "__main__":
    asyncio.run(_main())
