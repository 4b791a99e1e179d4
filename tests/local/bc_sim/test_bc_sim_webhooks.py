"""BC simulator webhooks: validation handshake, renew/delete/expiry, coalesced and collection notifications."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.local.bc_sim.conftest import BASE, COMPANY, CUSTOMERS, MakeClient

SUBS = f"{BASE}/subscriptions"
RESOURCE = f"/api/v2.0/companies({COMPANY})/customers"


@dataclass
class Receiver:
    url: str = ""
    echo: bool = True
    tokens: list[str] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    answers: list[int] = field(default_factory=list)  # statuses to answer notifications with, in order

    async def handle(self, request: web.Request) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None:
            self.tokens.append(token)
            return web.Response(text=token if self.echo else "nope", content_type="text/plain")
        self.notifications.append(await request.json())
        self.arrived.set()
        return web.Response(status=self.answers.pop(0) if self.answers else 202)

    async def next_batch(self, timeout: float = 5) -> dict[str, Any]:
        await asyncio.wait_for(self.arrived.wait(), timeout)
        self.arrived.clear()
        return self.notifications[-1]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    server = TestServer(app)
    await server.start_server()
    rec.url = str(server.make_url("/hook"))
    yield rec
    await server.close()


async def test_handshake_create_renew_delete(make_client: MakeClient, receiver: Receiver) -> None:
    bc = await make_client(notify_delay=0.05)
    resp = await bc.post(SUBS, json={"notificationUrl": receiver.url, "resource": RESOURCE, "clientState": "s3cret"})
    assert resp.status == 201, await resp.text()
    sub = await resp.json()
    assert len(receiver.tokens) == 1 and sub["clientState"] == "s3cret" and sub["resource"] == RESOURCE
    assert sub["expirationDateTime"] > sub["lastModifiedDateTime"]
    url = f"{SUBS}('{sub['subscriptionId']}')"

    resp = await bc.get(SUBS)
    assert [s["subscriptionId"] for s in (await resp.json())["value"]] == [sub["subscriptionId"]]

    resp = await bc.patch(url, json={})
    assert resp.status == 428
    resp = await bc.patch(url, json={}, headers={"If-Match": 'W/"stale"'})
    assert resp.status == 409
    resp = await bc.patch(url, json={"clientState": "new"}, headers={"If-Match": sub["@odata.etag"]})
    assert resp.status == 200
    renewed = await resp.json()
    assert len(receiver.tokens) == 2  # renewal repeats the handshake
    assert renewed["clientState"] == "new" and renewed["expirationDateTime"] >= sub["expirationDateTime"]

    resp = await bc.delete(url)
    assert resp.status == 204
    resp = await bc.get(url)
    assert resp.status == 404


async def test_handshake_failures_reject_the_subscription(make_client: MakeClient, receiver: Receiver) -> None:
    bc = await make_client()
    receiver.echo = False
    resp = await bc.post(SUBS, json={"notificationUrl": receiver.url, "resource": RESOURCE})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "BadRequest"
    resp = await bc.post(SUBS, json={"notificationUrl": "http://127.0.0.1:1/none", "resource": RESOURCE})
    assert resp.status == 400
    receiver.echo = True
    resp = await bc.post(SUBS, json={"notificationUrl": receiver.url, "resource": "/api/v2.0/companies(x)/vendors"})
    assert resp.status == 400
    assert (await (await bc.get(SUBS)).json())["value"] == []


async def test_notifications_are_coalesced_and_collection_when_many(
    make_client: MakeClient, receiver: Receiver
) -> None:
    bc = await make_client(notify_delay=0.3, collection_threshold=5)
    resp = await bc.post(SUBS, json={"notificationUrl": receiver.url, "resource": RESOURCE, "clientState": "cs"})
    sub = await resp.json()

    a = await (await bc.post(CUSTOMERS, json={"displayName": "A"})).json()
    for city in ("X", "Y", "Z"):
        await bc.patch(f"{CUSTOMERS}({a['id']})", json={"city": city}, headers={"If-Match": "*"})
    b = await (await bc.post(CUSTOMERS, json={"displayName": "B"})).json()
    batch = await receiver.next_batch()
    assert len(receiver.notifications) == 1
    values = batch["value"]
    assert [(v["changeType"], v["resource"]) for v in values] == [
        ("created", f"{RESOURCE}({a['id']})"),
        ("created", f"{RESOURCE}({b['id']})"),
    ]
    assert values[0]["subscriptionId"] == sub["subscriptionId"] and values[0]["clientState"] == "cs"
    assert values[0]["expirationDateTime"] == sub["expirationDateTime"]

    await bc.delete(f"{CUSTOMERS}({b['id']})")
    await bc.patch(f"{CUSTOMERS}({a['id']})", json={"city": "W"}, headers={"If-Match": "*"})
    values = (await receiver.next_batch())["value"]
    assert sorted(v["changeType"] for v in values) == ["deleted", "updated"]

    resp = await bc.post("/_sim/seed", json={"entity": "customers", "count": 6})
    values = (await receiver.next_batch())["value"]
    assert [v["changeType"] for v in values] == ["collection"]
    # codeunit 6154 GetEntityCollectionUrl: the resource plus a filter from the first change, minus 50 ms
    prefix = f"{RESOURCE}?$filter=lastModifiedDateTime%20gt%20"
    assert values[0]["resource"].startswith(prefix)
    assert values[0]["resource"][len(prefix) :] < values[0]["lastModifiedDateTime"]

    # other companies' and entities' changes do not notify this subscription
    await bc.post("/_sim/seed", json={"entity": "items", "count": 2})
    await bc.post(
        "/_sim/seed", json={"entity": "customers", "count": 2, "company": "7c1a1f0a-2f3b-4a51-9a6e-0c0de0000002"}
    )
    await asyncio.sleep(0.6)
    assert len(receiver.notifications) == 3
    stats = await (await bc.get("/_sim/stats")).json()
    assert stats["notificationsSent"] == 3 and stats["subscriptions"] == 1


async def test_expired_subscriptions_stop_notifying(make_client: MakeClient, receiver: Receiver) -> None:
    bc = await make_client(notify_delay=0.05, subscription_lifetime_seconds=0.3)
    resp = await bc.post(SUBS, json={"notificationUrl": receiver.url, "resource": RESOURCE})
    sub = await resp.json()
    await asyncio.sleep(0.4)
    await bc.post(CUSTOMERS, json={"displayName": "late"})
    await asyncio.sleep(0.2)
    assert receiver.notifications == []
    resp = await bc.get(f"{SUBS}('{sub['subscriptionId']}')")
    assert resp.status == 404


async def test_failed_deliveries_are_retried_then_a_refusal_deletes_the_subscription(
    make_client: MakeClient, receiver: Receiver
) -> None:
    # 36 h of retries compressed: the first retry after 60 s * 0.001
    bc = await make_client(notify_delay=0.05, webhook_time_scale=0.001)
    resp = await bc.post(SUBS, json={"notificationUrl": receiver.url, "resource": RESOURCE, "clientState": "cs"})
    sub = await resp.json()
    receiver.answers = [503, 429, 408]
    a = await (await bc.post(CUSTOMERS, json={"displayName": "A"})).json()
    for _ in range(4):
        await receiver.next_batch()
    assert len(receiver.notifications) == 4  # the same notification, delivered until it was accepted
    assert all(n == receiver.notifications[0] for n in receiver.notifications)
    stats = await (await bc.get("/_sim/stats")).json()
    assert stats["notificationsRetried"] == 3 and stats["subscriptions"] == 1

    receiver.answers = [401]  # any other non-2xx: BC deletes the subscription and never retries
    await bc.patch(f"{CUSTOMERS}({a['id']})", json={"city": "X"}, headers={"If-Match": "*"})
    await receiver.next_batch()
    await asyncio.sleep(0.3)
    stats = await (await bc.get("/_sim/stats")).json()
    assert stats["subscriptions"] == 0 and stats["subscriptionsDeletedByFailure"] == 1
    assert (await bc.get(f"{SUBS}('{sub['subscriptionId']}')")).status == 404
    await bc.patch(f"{CUSTOMERS}({a['id']})", json={"city": "Y"}, headers={"If-Match": "*"})
    await asyncio.sleep(0.3)
    assert len(receiver.notifications) == 5


async def test_contacts_cannot_be_subscribed_and_the_subscribed_form_is_echoed(
    make_client: MakeClient, receiver: Receiver
) -> None:
    bc = await make_client(notify_delay=0.05)
    resp = await bc.post(
        SUBS, json={"notificationUrl": receiver.url, "resource": RESOURCE.replace("customers", "contacts")}
    )
    assert resp.status == 400
    relative_form = f"companies({COMPANY})/customers"
    resp = await bc.post(SUBS, json={"notificationUrl": receiver.url, "resource": relative_form})
    assert resp.status == 201
    a = await (await bc.post(CUSTOMERS, json={"displayName": "A"})).json()
    values = (await receiver.next_batch())["value"]
    assert [v["resource"] for v in values] == [f"{relative_form}({a['id']})"]
