"""Telemetry: OpenTelemetry export to Application Insights, structured log dimensions, sync metrics.

- `configure_telemetry(settings)` turns on `azure-monitor-opentelemetry` once per process, and only when
  `APPLICATIONINSIGHTS_CONNECTION_STRING` is set (never at import time; locally it is a no-op). Application
  Insights has local auth disabled, so the exporter authenticates with an Entra token: the managed identity
  (it holds Monitoring Metrics Publisher), the composition root's credential when it passes one.
- `log_event(logger, message, mapping=..., job_id=..., ...)` logs with the dimensions as `extra` keys. The
  OpenTelemetry logging handler turns every non-standard LogRecord attribute into a log attribute, which the
  Azure Monitor exporter writes to `customDimensions` (so `traces | where customDimensions.mapping == "CUSTOMER"`).
- Metrics go through the global OpenTelemetry meter `bc_dv_sync`; without an SDK meter provider they are
  no-ops. The workbook and alert rules in infra/bicep/app/monitoring.bicep query these exact names.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.config import Settings

log = logging.getLogger(__name__)

METER_NAME = "bc_dv_sync"
CONNECTION_STRING_ENV = "APPLICATIONINSIGHTS_CONNECTION_STRING"
# Set in Azure: the Python worker sends the app's telemetry itself (correlated with the host's requests).
WORKER_TELEMETRY_ENV = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"

# Instrument names (customMetrics.name in Application Insights); the workbook and alerts depend on them.
SYNC_RECORDS = "sync.records"  # counter; attributes mapping, direction, outcome (record result status)
SYNC_CONFLICTS = "sync.conflicts"  # counter; attributes mapping, direction
SYNC_JOBS = "sync.jobs"  # counter; attributes mapping, kind, outcome (job status) -- heartbeat of the stale alert
SYNC_THROTTLED = "sync.throttled"  # counter; attributes service ("businessCentral"|"dataverse"), mapping
SYNC_LATENCY_MS = "sync.latency_ms"  # histogram; attributes mapping, direction, operation
QUEUE_LAG_MS = "queue.lag_ms"  # histogram; attributes queue

# LogRecord attributes that `extra` must not overwrite (logging raises KeyError for these).
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

AZURE_SDK_LOGGERS = ("azure", "uamqp", "msal", "urllib3")

_lock = threading.Lock()
_configured = False

# The mapping the current work is for (a work message, a Synchronize-now call): the connectors' retry policy
# knows the service it waited for, not the mapping, and labels ``sync.throttled`` with this.
CURRENT_MAPPING: ContextVar[str | None] = ContextVar("sync_current_mapping", default=None)


def configure_telemetry(settings: Settings | None = None, *, credential: TokenCredential | None = None) -> bool:
    """Start the Azure Monitor OpenTelemetry distro once. Returns True if export is (now) on.

    A no-op without `APPLICATIONINSIGHTS_CONNECTION_STRING`. Safe to call from every function invocation.
    """
    global _configured
    connection_string = os.environ.get(CONNECTION_STRING_ENV, "").strip()
    if not connection_string:
        return False
    with _lock:
        if _configured:
            return True
        _quiet_azure_sdks()
        if os.environ.get(WORKER_TELEMETRY_ENV, "").lower() == "true":
            # In Azure (infra/bicep sets it) the Functions Python worker configures the distro itself, with the
            # invocation's trace context and APPLICATIONINSIGHTS_AUTHENTICATION_STRING (the managed identity);
            # a second configure_azure_monitor here would export every log and span twice.
            _configured = True
            log.info("telemetry export configured by the Functions worker (%s)", WORKER_TELEMETRY_ENV)
            return True
        # Imported here: the distro pulls in many instrumentations; the app must index without them.
        from azure.monitor.opentelemetry import configure_azure_monitor

        if credential is None:
            credential = _default_credential(settings)
        configure_azure_monitor(
            connection_string=connection_string,
            credential=credential,
            logger_name="",  # the root logger: the service's own loggers propagate to it
        )

        _configured = True
        log.info("telemetry export to Application Insights configured")
        return True


def _quiet_azure_sdks() -> None:
    """The Azure SDKs log every request and AMQP link change at INFO: in production only their warnings."""
    for name in AZURE_SDK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _default_credential(settings: Settings | None) -> TokenCredential:
    # The managed identity holds Monitoring Metrics Publisher; the BC/Dataverse app registration does not.
    from shared.identity import build_credentials, get_credentials

    return (build_credentials(settings) if settings is not None else get_credentials()).azure_sync


def log_event(
    logger: logging.Logger,
    message: str,
    *,
    mapping: str | None = None,
    job_id: str | None = None,
    record_ids: Iterable[str] | None = None,
    direction: str | None = None,
    outcome: str | None = None,
    level: int = logging.INFO,
    exc_info: Any = None,
    **dims: Any,
) -> None:
    """Log `message` with custom dimensions (None values are left out).

    `record_ids` becomes one comma-separated string (customDimensions values are strings). Extra `dims` whose
    name clashes with a LogRecord attribute (e.g. `name`, `msg`) are renamed `dim_<name>`.
    """
    extra = event_dimensions(
        mapping=mapping, job_id=job_id, record_ids=record_ids, direction=direction, outcome=outcome, **dims
    )
    logger.log(level, message, extra=extra, exc_info=exc_info)


def event_dimensions(**dims: Any) -> dict[str, Any]:
    """The `extra` dict `log_event` uses: None dropped, ids joined, reserved names prefixed, values primitive."""
    out: dict[str, Any] = {}
    for key, value in dims.items():
        if value is None:
            continue
        if key == "record_ids" and not isinstance(value, str):
            value = ",".join(str(v) for v in value)
        elif not isinstance(value, str | bool | int | float):
            value = str(value)  # OTel attributes must be primitives
        out[f"dim_{key}" if key in _RESERVED else key] = value
    return out


class _Instruments:
    """The meter's instruments, created on first use from the global meter provider at that time."""

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        meter = metrics.get_meter(METER_NAME, meter_provider=meter_provider)
        self.records = meter.create_counter(SYNC_RECORDS, unit="{record}", description="Records synchronized")
        self.conflicts = meter.create_counter(SYNC_CONFLICTS, unit="{record}", description="Field conflicts")
        self.jobs = meter.create_counter(SYNC_JOBS, unit="{job}", description="Finished sync jobs")
        self.throttled = meter.create_counter(SYNC_THROTTLED, unit="{response}", description="429s from BC/DV")
        self.latency = meter.create_histogram(SYNC_LATENCY_MS, unit="ms", description="Sync latency")
        self.queue_lag = meter.create_histogram(QUEUE_LAG_MS, unit="ms", description="Enqueue-to-start delay")


_instruments: _Instruments | None = None


def _get() -> _Instruments:
    global _instruments
    if _instruments is None:
        with _lock:
            if _instruments is None:
                _instruments = _Instruments()
    return _instruments


def reset_instruments(meter_provider: metrics.MeterProvider | None = None) -> None:
    """Re-create the instruments, from `meter_provider` if given (tests), else lazily from the global one."""
    global _instruments
    _instruments = None if meter_provider is None else _Instruments(meter_provider)


def record_sync_outcomes(mapping: str, direction: str, counts: Mapping[str, int]) -> None:
    """Add per-outcome record counts (keys: ``shared.domain.model.Outcome`` values, e.g. `{"created": 3,
    "failed": 1}`); `conflict` also feeds sync.conflicts."""
    inst = _get()
    for outcome, n in counts.items():
        if n <= 0:
            continue
        inst.records.add(n, {"mapping": mapping, "direction": direction, "outcome": str(outcome)})
        if outcome == "conflict":
            inst.conflicts.add(n, {"mapping": mapping, "direction": direction})


def record_job(mapping: str, kind: str, outcome: str) -> None:
    """Count one finished job (`outcome` = job status). Every scheduled run of a mapping should call this:
    the stale-mapping alert fires when a mapping has no `succeeded` job for N hours."""
    _get().jobs.add(1, {"mapping": mapping, "kind": kind, "outcome": outcome})


def record_throttled(service: str, mapping: str | None = None) -> None:
    """One 429 from BC / Dataverse (the retry policy waits it out); ``mapping`` defaults to ``CURRENT_MAPPING``."""
    mapping = mapping or CURRENT_MAPPING.get()
    attrs = {"service": service} if mapping is None else {"service": service, "mapping": mapping}
    _get().throttled.add(1, attrs)


def record_latency(mapping: str, direction: str, milliseconds: float, *, operation: str = "record") -> None:
    _get().latency.record(milliseconds, {"mapping": mapping, "direction": direction, "operation": operation})


def record_queue_lag(milliseconds: float, *, queue: str = "sync-work") -> None:
    _get().queue_lag.record(max(0.0, milliseconds), {"queue": queue})


def record_queue_lag_since(enqueued_at: datetime | None, *, queue: str = "sync-work") -> None:
    """The enqueue-to-start delay of a Service Bus message that starts now (naive times are UTC)."""
    if enqueued_at is None:
        return
    if enqueued_at.tzinfo is None:
        enqueued_at = enqueued_at.replace(tzinfo=UTC)
    record_queue_lag((datetime.now(UTC) - enqueued_at).total_seconds() * 1000, queue=queue)
