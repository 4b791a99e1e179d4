"""Webhook subscriptions of the BC simulator: validation handshake, renew, expiry, coalesced notifications."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp

from local.bc_sim.store import BCError, Store, check_etag, format_ms

log = logging.getLogger(__name__)

_G = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_RESOURCE_RE = re.compile(rf"(?:^|/)companies\(({_G})\)/(\w+)/?$")
# Learn "Working with webhooks in Dynamics 365 Business Central", supported APIs: contacts are not listed.
WEBHOOK_ENTITIES = frozenset(
    {"customers", "items", "vendors", "currencies", "paymentTerms", "shipmentMethods", "unitsOfMeasure",
     "salesOrders", "salesInvoices", "salesQuotes", "salesCreditMemos", "purchaseInvoices", "employees"}
)  # fmt: skip
MAX_SUBSCRIPTIONS = 200  # BC's limit per environment


@dataclass
class WebhookSettings:
    notify_delay: float = 30.0  # BC coalesces changes for ~30 s before notifying
    collection_threshold: int = 1000  # more pending changes than this -> one "collection" notification
    lifetime_seconds: float = 3 * 24 * 3600  # subscriptions expire after three days
    handshake_timeout: float = 10.0
    # Delivery failures (codeunit 6154 "API Webhook Notification Send", ShouldReschedule): 408, 429, 5xx
    # and no answer are retried for up to 36 hours; any other non-2xx answer deletes the subscription.
    retry_window_seconds: float = 36 * 3600
    first_retry_seconds: float = 60.0  # then doubling, capped at max_retry_seconds
    max_retry_seconds: float = 3600.0
    time_scale: float = 1.0  # < 1 compresses the retry schedule for tests (e.g. 0.001: 36 h in ~2 min)


@dataclass
class _Subscription:
    record: dict[str, Any]
    company_id: str
    entity: str
    expires: float  # epoch seconds
    pending: dict[str, tuple[str, str]] = field(default_factory=dict)  # row id -> (changeType, lmdt)
    flush_scheduled: bool = False


class Webhooks:
    def __init__(self, store: Store, settings: WebhookSettings) -> None:
        self.store = store
        self.settings = settings
        self.subs: dict[str, _Subscription] = {}
        self.session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0
        self.retried = 0
        self.deleted_by_failure = 0
        self.handshakes = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        # trust_env=False: notifications go straight to the (local) receiver, never through a proxy.
        self.session = aiohttp.ClientSession(trust_env=False)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.session is not None:
            await self.session.close()
            self.session = None

    def reset(self) -> None:
        self.subs.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "subscriptions": len(self._active()),
            "notificationsSent": self.sent,
            "notificationsFailed": self.failed,
            "notificationsRetried": self.retried,
            "subscriptionsDeletedByFailure": self.deleted_by_failure,
            "handshakes": self.handshakes,
        }

    # ------------------------------------------------------------------ API
    def _active(self) -> list[_Subscription]:
        now = time.time()
        for sid in [sid for sid, s in self.subs.items() if s.expires <= now]:
            del self.subs[sid]  # BC removes expired subscriptions
        return list(self.subs.values())

    def get(self, sid: str) -> dict[str, Any]:
        self._active()
        sub = self.subs.get(sid)
        if sub is None:
            raise BCError(404, "BadRequest_NotFound", f"The subscription '{sid}' does not exist.")
        return sub.record

    def list(self) -> list[dict[str, Any]]:
        return [s.record for s in self._active()]

    async def create(self, body: Any, user_id: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BCError(400, "BadRequest", "The request body must be a JSON object.")
        url, resource = body.get("notificationUrl"), body.get("resource")
        client_state = body.get("clientState", "")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise BCError(400, "BadRequest", "notificationUrl must be an absolute http(s) URL.")
        if not isinstance(resource, str):
            raise BCError(400, "BadRequest", "resource is required.")
        if not isinstance(client_state, str) or len(client_state) > 2048:
            raise BCError(400, "BadRequest", "clientState must be a string of at most 2048 characters.")
        m = _RESOURCE_RE.search(resource.split("?", 1)[0])
        if not m or m.group(2) not in WEBHOOK_ENTITIES:
            raise BCError(400, "BadRequest", f"The resource '{resource}' cannot be subscribed to.")
        company_id, entity = m.group(1).lower(), m.group(2)
        self.store.company(company_id)  # 404 for an unknown company
        if len(self._active()) >= MAX_SUBSCRIPTIONS:
            raise BCError(400, "BadRequest", f"The maximum of {MAX_SUBSCRIPTIONS} subscriptions is reached.")
        await self._handshake(url)
        now = time.time()
        expires = now + self.settings.lifetime_seconds
        sid = uuid.uuid4().hex
        stamp = self.store.clock.next()
        record = {
            "@odata.etag": self.store.new_etag(),
            "subscriptionId": sid,
            "notificationUrl": url,
            "resource": resource,
            "timestamp": int(now * 1000),
            "userId": user_id,
            "lastModifiedDateTime": stamp,
            "clientState": client_state,
            "expirationDateTime": format_ms(int(expires * 1000)),
            "systemCreatedAt": stamp,
            "systemCreatedBy": user_id,
            "systemModifiedAt": stamp,
            "systemModifiedBy": user_id,
        }
        self.subs[sid] = _Subscription(record, company_id, entity, expires)
        return record

    async def renew(self, sid: str, body: Any, if_match: str | None) -> dict[str, Any]:
        record = self.get(sid)
        if if_match is None:
            raise BCError(428, "Request_PreconditionRequired", "An If-Match header is required for this request.")
        check_etag(record, if_match)
        if not isinstance(body, dict):
            raise BCError(400, "BadRequest", "The request body must be a JSON object.")
        if "resource" in body and body["resource"] != record["resource"]:
            raise BCError(400, "BadRequest", "The resource of a subscription cannot be changed.")
        url = body.get("notificationUrl", record["notificationUrl"])
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise BCError(400, "BadRequest", "notificationUrl must be an absolute http(s) URL.")
        await self._handshake(url)  # BC repeats the handshake on renewal
        sub = self.subs[sid]
        sub.expires = time.time() + self.settings.lifetime_seconds
        stamp = self.store.clock.next()
        record.update(
            {
                "@odata.etag": self.store.new_etag(),
                "notificationUrl": url,
                "clientState": body.get("clientState", record["clientState"]),
                "expirationDateTime": format_ms(int(sub.expires * 1000)),
                "lastModifiedDateTime": stamp,
                "systemModifiedAt": stamp,
            }
        )
        return record

    def delete(self, sid: str) -> None:
        self.get(sid)
        del self.subs[sid]

    async def _handshake(self, url: str) -> None:
        if self.session is None:
            raise BCError(500, "InternalServerError", "The simulator's HTTP client is not running.")
        token = secrets.token_urlsafe(24)
        target = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token)}"
        self.handshakes += 1
        try:
            timeout = aiohttp.ClientTimeout(total=self.settings.handshake_timeout)
            async with self.session.post(target, timeout=timeout) as resp:
                text = (await resp.text()).strip()
                ok = resp.status == 200 and text.strip('"') == token
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("handshake with %s failed: %s", url, exc)
            ok = False
        if not ok:
            raise BCError(
                400,
                "BadRequest",
                "The subscription could not be created: the notification URL did not answer the validation "
                "request with 200 and the validationToken.",
            )

    # ------------------------------------------------------------------ notifications
    def on_change(self, company_id: str, entity: str, rid: str, change: str, lmdt: str) -> None:
        """Store listener: queue the change for every live subscription of the resource."""
        if not self.subs:
            return
        now = time.time()
        for sid, sub in self.subs.items():
            if sub.entity != entity or sub.company_id != company_id or sub.expires <= now:
                continue
            previous = sub.pending.get(rid)
            if previous is not None and previous[0] == "created" and change == "updated":
                change = "created"  # coalesced within the window: still a creation to the subscriber
            sub.pending[rid] = (change, lmdt)
            if not sub.flush_scheduled:
                sub.flush_scheduled = True
                self._spawn(self._flush_later(sid))

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a synchronous caller): nobody can be notified
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_later(self, sid: str) -> None:
        await asyncio.sleep(self.settings.notify_delay)
        sub = self.subs.get(sid)
        if sub is None:
            return
        pending, sub.pending = sub.pending, {}
        sub.flush_scheduled = False
        if not pending or sub.expires <= time.time():
            return
        record = sub.record
        base = record["resource"].split("?", 1)[0].rstrip("/")  # echoes the form that was subscribed
        common = {
            "subscriptionId": record["subscriptionId"],
            "clientState": record["clientState"],
            "expirationDateTime": record["expirationDateTime"],
        }
        if len(pending) > self.settings.collection_threshold:
            # Too many changes: one "collection" notification; lastModifiedDateTime is the EARLIEST
            # pending change, so a subscriber reading `lastModifiedDateTime ge <it>` misses nothing.
            # The resource carries the filter BC builds (codeunit 6154 GetEntityCollectionUrl): changes after the
            # first pending one, minus 50 ms for SQL's datetime rounding.
            earliest = min(lmdt for _, lmdt in pending.values())
            since = (datetime.fromisoformat(earliest.replace("Z", "+00:00")) - timedelta(milliseconds=50))
            stamp = since.strftime("%Y-%m-%dT%H:%M:%S.") + f"{since.microsecond // 1000:03d}Z"
            resource = f"{base}?$filter=lastModifiedDateTime%20gt%20{stamp}"
            value = [{**common, "resource": resource, "changeType": "collection", "lastModifiedDateTime": earliest}]
        else:
            value = [
                {**common, "resource": f"{base}({rid})", "changeType": change, "lastModifiedDateTime": lmdt}
                for rid, (change, lmdt) in pending.items()
            ]
        await self._deliver(sid, record["notificationUrl"], {"value": value})

    async def _deliver(self, sid: str, url: str, payload: Mapping[str, Any]) -> None:
        """Posts a notification, retrying as BC does; a refusing receiver loses its subscription."""
        cfg = self.settings
        started = time.time()
        delay = cfg.first_retry_seconds
        while True:
            status = await self._post(url, payload)
            if status is not None and 200 <= status < 300:
                self.sent += 1
                return
            self.failed += 1
            if status is not None and not retryable_delivery_status(status):
                if self.subs.pop(sid, None) is not None:
                    self.deleted_by_failure += 1
                    log.info("subscription %s deleted: its receiver answered %s", sid, status)
                return
            if (time.time() - started) / max(cfg.time_scale, 1e-9) + delay > cfg.retry_window_seconds:
                return  # 36 hours of retries spent: the notification is dropped
            await asyncio.sleep(delay * cfg.time_scale)
            if sid not in self.subs:
                return
            self.retried += 1
            delay = min(delay * 2, cfg.max_retry_seconds)

    async def _post(self, url: str, payload: Mapping[str, Any]) -> int | None:
        """The receiver's HTTP status, or None when it gave no answer (refused, reset, timed out)."""
        if self.session is None:
            return None
        try:
            timeout = aiohttp.ClientTimeout(total=self.settings.handshake_timeout)
            async with self.session.post(url, json=payload, timeout=timeout) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("notification to %s failed: %s", url, exc)
            return None


def retryable_delivery_status(status: int) -> bool:
    """BC's ShouldReschedule: 408 Request Timeout, 429 Too Many Requests and every 5xx are retried."""
    return status in (408, 429) or 500 <= status < 600
