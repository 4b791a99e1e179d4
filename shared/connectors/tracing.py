"""Dependency telemetry for Business Central and Dataverse: azure-core's ``DistributedTracingPolicy``.

Placed inside the retry policy, so every HTTP attempt is one CLIENT span: a 429 and its retry are two
dependencies in Application Insights (``resultCode`` 429, ``target`` the host), with the ``Retry-After`` the
service asked for as ``http.response.header.retry-after``. Spans go to whatever OpenTelemetry tracer provider
is configured (the Azure Monitor distro in Azure; none locally: then they are non-recording and cheap).
Tracing is switched on for these requests whatever ``azure.core.settings.tracing_enabled`` says, since these
are the calls the workbook's throttling panel is about. The URL is recorded sanitized (query values redacted
except ``api-version``); headers other than Retry-After are never recorded.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import DistributedTracingPolicy

RETRY_AFTER_ATTRIBUTE = "http.response.header.retry-after"
SERVICE_ATTRIBUTE = "sync.service"


def _span_name(request: Any) -> str:
    """`GET /v2.0/{tenant}/...`: method + path without ids would need parsing per service; the path's last
    segment without keys keeps names few (`GET customers`, `POST $batch`)."""
    path = urlsplit(request.url).path.rstrip("/")
    last = path.rsplit("/", 1)[-1].split("(", 1)[0] or "/"
    return f"{request.method} {last}"


class DependencyTracingPolicy(DistributedTracingPolicy):  # type: ignore[type-arg]
    def __init__(self, service: str) -> None:
        super().__init__(network_span_namer=_span_name, tracing_attributes={SERVICE_ATTRIBUTE: service})

    def on_request(self, request: PipelineRequest[Any]) -> None:
        options = request.context.options
        tracing = dict(options.get("tracing_options") or {})
        tracing.setdefault("enabled", True)
        options["tracing_options"] = tracing
        super().on_request(request)

    def end_span(self, request: PipelineRequest[Any], response: Any = None, exc_info: Any = None) -> None:
        span = request.context.get(self.TRACING_CONTEXT)
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if span is not None and retry_after:
            if hasattr(span, "add_attribute"):  # the azure-core-tracing-opentelemetry plugin's span wrapper
                span.add_attribute(RETRY_AFTER_ATTRIBUTE, retry_after)
            else:  # azure-core's native OpenTelemetry span
                span.set_attribute(RETRY_AFTER_ATTRIBUTE, retry_after)
        super().end_span(request, response=response, exc_info=exc_info)
