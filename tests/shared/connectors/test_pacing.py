"""The client's side of the services' request windows (``shared.connectors.http``: ``pacing_wait``,
``RequestWindow``, ``PacingPolicy``): a request waits for its slot instead of being refused."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from local.simcore import ServiceLimits, install_sim_core
from shared.connectors._odata import DATAVERSE_MAX_URL_BYTES, MAX_URL_BYTES, chunk_ids_by_url
from shared.connectors.http import RequestWindow, ServiceHttp, pacing_wait
from shared.errors import ThrottledError
from tests.shared.connectors.test_connectors_http import FakeCredential


def test_a_request_fits_while_the_window_has_room() -> None:
    assert pacing_wait([1.0, 2.0], 0, 3.0, limit=3, seconds=5) == 0.0
    assert pacing_wait([], 2, 3.0, limit=3, seconds=5) == 0.0


def test_a_full_window_frees_when_its_oldest_answer_is_a_window_old() -> None:
    assert pacing_wait([1.0, 2.0, 2.5], 0, 3.0, limit=3, seconds=5) == 3.0  # 1.0 + 5 - 3.0
    # one in flight as well: the second oldest must leave too
    assert pacing_wait([1.0, 2.0, 2.5], 1, 3.0, limit=3, seconds=5) == 4.0


def test_every_slot_in_flight_waits_for_an_answer() -> None:
    assert pacing_wait([], 3, 3.0, limit=3, seconds=5) is None
    assert pacing_wait([1.0], 3, 3.0, limit=3, seconds=5) is None


def test_a_hold_from_retry_after_comes_first() -> None:
    assert pacing_wait([], 0, 3.0, limit=3, seconds=5, hold_until=4.5) == 1.5
    assert pacing_wait([], 0, 5.0, limit=3, seconds=5, hold_until=4.5) == 0.0


async def test_the_window_never_lets_more_than_its_limit_through() -> None:
    window = RequestWindow(3, 0.3)
    sent: list[float] = []

    async def one() -> None:
        await window.acquire()
        sent.append(time.monotonic())
        await asyncio.sleep(0.01)
        await window.release(counted=True)

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(7)))
    rel = sorted(t - t0 for t in sent)
    assert rel[2] < 0.1 and rel[3] >= 0.3 and rel[6] >= 0.6  # 3 at once, then one window per 3
    for i in range(3, 7):
        assert rel[i] >= rel[i - 3] + 0.3  # a sliding window, counted from each answer


async def test_a_slot_further_than_the_retry_budget_throttles_at_once() -> None:
    window = RequestWindow(1, 60)
    assert await window.acquire() is None
    await window.release(counted=True)
    away = await asyncio.wait_for(window.acquire(max_wait=1), 0.5)
    assert away is not None and 59 < away <= 60  # nothing taken: the caller is throttled
    assert await window.acquire(max_wait=1) is not None  # still nothing taken


async def test_a_full_client_window_raises_throttled_without_sending() -> None:
    sent = 0

    async def ok(request: web.Request) -> web.Response:
        nonlocal sent
        sent += 1
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/x", ok)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    http = ServiceHttp(service="t", base_url=base, credential=FakeCredential(), scope="api://x/.default",
                       max_concurrency=4, requests_per_window=1, window_seconds=60, retry_total_timeout=2)  # fmt: skip
    await http.request("GET", f"{base}/x")
    with pytest.raises(ThrottledError) as caught:
        await asyncio.wait_for(http.request("GET", f"{base}/x"), 1)
    await http.aclose()
    await server.close()
    assert sent == 1 and caught.value.retry_after is not None and caught.value.retry_after > 50


async def test_a_refused_request_takes_no_slot() -> None:
    window = RequestWindow(1, 10)
    await window.acquire()
    await window.release(counted=False)
    await asyncio.wait_for(window.acquire(), 0.1)


async def test_a_simulator_window_is_never_exceeded_and_a_429_holds_the_client() -> None:
    """Against the simulators' own service protection: paced, 9 requests through a window of 3 per 0.4 s
    meet no 429; unpaced (only Retry-After), the same requests are refused and wait whole seconds."""

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    core = install_sim_core(app, name="t", route_key=lambda r: "x", error_body=lambda s, r, m: {"error": m},
                            auth=None, limits=ServiceLimits(requests_per_window=3, window_seconds=0.4),
                            on_reset_data=lambda: None)  # fmt: skip
    app.router.add_get("/x", ok)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")

    def http(**kw: Any) -> ServiceHttp:
        return ServiceHttp(service="t", base_url=base, credential=FakeCredential(), scope="api://x/.default",
                           max_concurrency=4, **kw)  # fmt: skip

    paced = http(requests_per_window=3, window_seconds=0.4)
    t0 = time.monotonic()
    await asyncio.gather(*(paced.request("GET", f"{base}/x") for _ in range(9)))
    paced_s = time.monotonic() - t0
    assert core.throttled == 0 and paced.calls.total == 9
    assert 0.8 <= paced_s < 1.6
    await paced.aclose()

    unpaced = http()
    t0 = time.monotonic()
    await asyncio.gather(*(unpaced.request("GET", f"{base}/x") for _ in range(4)))
    assert core.throttled >= 1 and unpaced.calls.throttled >= 1
    assert time.monotonic() - t0 >= 1.0  # Retry-After: whole seconds
    await unpaced.aclose()
    await server.close()


def test_dataverse_id_queries_use_its_documented_url_length() -> None:
    ids = [f"{i:08x}-0000-0000-0000-000000000000" for i in range(2000)]
    base = len("https://org.crm.dynamics.com/api/data/v9.2/accounts")
    dv = list(chunk_ids_by_url(ids, field="accountid", base_len=base, dataverse=True))
    generic = list(chunk_ids_by_url(ids, field="accountid", base_len=base, dataverse=True, budget=MAX_URL_BYTES))
    assert [i for c in dv for i in c] == ids
    assert len(dv) == 4 and len(generic) == 12 and DATAVERSE_MAX_URL_BYTES < 32_768


async def test_clients_built_from_settings_pace_to_the_configured_windows() -> None:
    from shared.config import Settings
    from shared.connectors.business_central import BusinessCentralClient
    from shared.connectors.dataverse import DataverseClient

    default = Settings()
    bc, dv = BusinessCentralClient(default, None), DataverseClient(default, None)
    assert bc.calls is not None and bc._http.window is not None and dv._http.window is not None
    assert (bc._http.window.limit, bc._http.window.seconds) == (6000, 300)  # the documented per-user windows
    assert (dv._http.window.limit, dv._http.window.seconds) == (6000, 300)
    scaled = default.model_copy(update={"bc_requests_per_window": 10, "bc_window_seconds": 5,
                                        "dataverse_requests_per_window": 0})  # fmt: skip
    bc2, dv2 = BusinessCentralClient(scaled, None), DataverseClient(scaled, None)
    assert bc2._http.window is not None and (bc2._http.window.limit, bc2._http.window.seconds) == (10, 5)
    assert dv2._http.window is None  # 0: paced by 429s only
    for client in (bc, dv, bc2, dv2):
        await client.aclose()


async def test_paced_requests_reach_the_benchs_bound_of_the_simulators_sliding_window() -> None:
    """bench/limits.py's bound, (⌈accepted ÷ limit⌉ − 1) × window, against the simulators' own window: 23
    requests through 10 per 0.5 s cannot take less than 1 s (the 21st waits for the 11th to be a window old,
    which waited for the 1st), and a paced client takes about that, with nothing refused."""
    from bench.limits import bound_seconds

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    core = install_sim_core(app, name="t", route_key=lambda r: "x", error_body=lambda s, r, m: {"error": m},
                            auth=None, limits=ServiceLimits(requests_per_window=10, window_seconds=0.5),
                            on_reset_data=lambda: None)  # fmt: skip
    app.router.add_get("/x", ok)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    http = ServiceHttp(service="t", base_url=base, credential=FakeCredential(), scope="api://x/.default",
                       max_concurrency=5, requests_per_window=10, window_seconds=0.5)  # fmt: skip
    t0 = time.monotonic()
    await asyncio.gather(*(http.request("GET", f"{base}/x") for _ in range(23)))
    took = time.monotonic() - t0
    await http.aclose()
    await server.close()
    bound = bound_seconds(23, 10, 0.5)
    assert bound == 1.0 and core.throttled == 0
    assert bound <= took < bound + 1.0, took  # (slack for a loaded box)
