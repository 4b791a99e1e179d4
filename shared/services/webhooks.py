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


def _expires(sub: dict[str, Any]) -> datetime | None:
    raw = sub.get("expirationDateTime")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


# API v2.0 entities BC's webhooks do not support (Learn, "Working with webhooks": supported entities).
NO_BC_WEBHOOKS = frozenset({"salespeoplePurchasers", "opportunities"})


async def ensure_bc_subscriptions(engine: Engine, bc: Any) -> dict[str, str]:
    """``{resource: "created" | "renewed" | "ok" | "failed: <reason>"}`` for each running mapping's BC entity."""
    url = engine.settings.public_base_url.rstrip("/") + "/api/webhooks/businesscentral"
    company = await bc.company_id()
    existing = {
        s.get("resource", "").split("api/v2.0/")[-1]: s
        for s in await bc.list_subscriptions()
        if s.get("notificationUrl") == url
    }
    out: dict[str, str] = {}
    for mapping in await engine.registry.list():
        if mapping.state != "running" or mapping.bc_api != "v2.0" or mapping.bc_entity in NO_BC_WEBHOOKS:
            continue  # custom API pages and entities without webhooks: the scheduled incremental syncs pick them up
        resource = f"companies({company})/{mapping.bc_entity}"
        sub = existing.get(resource)
        try:
            if sub is None:
                await bc.create_subscription(url, resource, engine.settings.bc_webhook_client_state)
                out[resource] = "created"
            elif (_expires(sub) or utcnow()) - utcnow() < RENEW_BEFORE:
                await bc.renew_subscription(
                    sub["subscriptionId"],
                    sub.get("@odata.etag", "*"),
                    notificationUrl=url,
                    resource=sub.get("resource"),
                    clientState=engine.settings.bc_webhook_client_state,
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
