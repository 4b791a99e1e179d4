"""BC/Dataverse calls as OpenTelemetry dependencies (azure-core's DistributedTracingPolicy), checked with an
in-memory span exporter: every attempt is a CLIENT span, a 429 shows its status and Retry-After."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared.connectors.http import ServiceHttp
from shared.connectors.tracing import RETRY_AFTER_ATTRIBUTE, SERVICE_ATTRIBUTE
from tests.shared.connectors.test_connectors_http import FakeCredential, serve  # noqa: F401 -- fixture


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (set once per process by OpenTelemetry) with an in-memory exporter."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()


async def test_every_attempt_is_a_dependency_and_a_429_shows_retry_after(
    serve: Any,  # noqa: F811 -- the fixture imported above
    spans: InMemorySpanExporter,
) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent", ""))
        if len(seen) == 1:
            return web.json_response({"error": {"code": "TooManyRequests", "message": "slow"}}, status=429,
                                     headers={"Retry-After": "1"})  # fmt: skip
        return web.json_response({"value": []})

    base = await serve(handler)
    http = ServiceHttp(
        service="businessCentral", base_url=base, credential=FakeCredential(), scope="api://x/.default",
        max_concurrency=2, retry_backoff_base=0.01,
    )  # fmt: skip
    try:
        response = await http.request("GET", f"{base}/v2.0/t/Production/api/v2.0/companies(1)/customers?$top=5")
    finally:
        await http.aclose()
    assert response.status_code == 200

    finished = [s for s in spans.get_finished_spans() if s.attributes.get(SERVICE_ATTRIBUTE) == "businessCentral"]
    assert [s.attributes["http.response.status_code"] for s in finished] == [429, 200]
    throttled, ok = finished
    assert throttled.kind is SpanKind.CLIENT and throttled.name == "GET customers"
    assert throttled.attributes[RETRY_AFTER_ATTRIBUTE] == "1"
    assert RETRY_AFTER_ATTRIBUTE not in ok.attributes
    assert ok.attributes["server.address"] == "127.0.0.1"
    # The trace context travels to the service (W3C traceparent), one per attempt.
    assert all(tp.startswith("00-") for tp in seen) and len(set(seen)) == 2
    # Query values are redacted in the recorded URL ($top is not in the allow-list); tokens never recorded.
    assert "REDACTED" in str(ok.attributes["url.full"])
    assert not any("secret-token-value" in str(v) for s in finished for v in s.attributes.values())
