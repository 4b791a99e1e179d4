"""shared/telemetry.py: log dimensions reach LogRecords (what the OTel handler exports), metrics are recorded."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared import telemetry


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    r = InMemoryMetricReader()
    telemetry.reset_instruments(MeterProvider(metric_readers=[r]))
    yield r
    telemetry.reset_instruments()


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    out = []
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            if sm.scope.name != telemetry.METER_NAME:
                continue
            for m in sm.metrics:
                if m.name == name:
                    out.extend(m.data.data_points)
    return out


def test_log_event_carries_dimensions_as_record_attributes(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.telemetry")
    with caplog.at_level(logging.INFO, logger="tests.telemetry"):
        telemetry.log_event(
            logger,
            "page synced",
            mapping="CUSTOMER",
            job_id="job-1",
            record_ids=["a", "b"],
            direction="toDataverse",
            outcome="succeeded",
            page=3,
        )
    (rec,) = caplog.records
    assert rec.getMessage() == "page synced"
    assert rec.mapping == "CUSTOMER"
    assert rec.job_id == "job-1"
    assert rec.record_ids == "a,b"
    assert rec.direction == "toDataverse"
    assert rec.outcome == "succeeded"
    assert rec.page == 3


def test_log_event_drops_none_and_renames_reserved(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.telemetry")
    with caplog.at_level(logging.INFO, logger="tests.telemetry"):
        telemetry.log_event(logger, "x", mapping="ITEM-PRODUCT", name="clash", level=logging.WARNING)
    (rec,) = caplog.records
    assert rec.levelno == logging.WARNING
    assert rec.name == "tests.telemetry"  # not overwritten
    assert rec.dim_name == "clash"
    assert not hasattr(rec, "job_id")


def test_otel_logging_handler_exports_dimensions_as_attributes() -> None:
    # The exact path to customDimensions: the OTel LoggingHandler copies extra keys into log attributes.
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import InMemoryLogExporter, SimpleLogRecordProcessor

    exporter = InMemoryLogExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger("tests.telemetry.otel")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        telemetry.log_event(logger, "job finished", mapping="CONTACT", job_id="j2", outcome="failed")
    finally:
        logger.removeHandler(handler)
    (exported,) = exporter.get_finished_logs()
    attrs = dict(exported.log_record.attributes or {})
    assert attrs["mapping"] == "CONTACT"
    assert attrs["job_id"] == "j2"
    assert attrs["outcome"] == "failed"


def test_record_sync_outcomes_counts_per_outcome_and_conflicts(reader: InMemoryMetricReader) -> None:
    telemetry.record_sync_outcomes("CUSTOMER", "toDataverse", {"created": 3, "failed": 1, "conflict": 2, "skipped": 0})
    telemetry.record_sync_outcomes("CUSTOMER", "toDataverse", {"created": 2})
    points = {p.attributes["outcome"]: p.value for p in _points(reader, telemetry.SYNC_RECORDS)}
    assert points == {"created": 5, "failed": 1, "conflict": 2}
    (conflicts,) = _points(reader, telemetry.SYNC_CONFLICTS)
    assert conflicts.value == 2
    assert dict(conflicts.attributes) == {"mapping": "CUSTOMER", "direction": "toDataverse"}


def test_histograms_jobs_and_throttling(reader: InMemoryMetricReader) -> None:
    telemetry.record_latency("CUSTOMER", "fromDataverse", 120.0)
    telemetry.record_latency("CUSTOMER", "fromDataverse", 80.0)
    telemetry.record_queue_lag(-5)  # clock skew never records a negative lag
    telemetry.record_job("CUSTOMER", "incremental", "succeeded")
    telemetry.record_throttled("dataverse", "CUSTOMER")
    (lat,) = _points(reader, telemetry.SYNC_LATENCY_MS)
    assert (lat.count, lat.sum) == (2, 200.0)
    (lag,) = _points(reader, telemetry.QUEUE_LAG_MS)
    assert (lag.count, lag.sum) == (1, 0.0)
    (job,) = _points(reader, telemetry.SYNC_JOBS)
    assert dict(job.attributes) == {"mapping": "CUSTOMER", "kind": "incremental", "outcome": "succeeded"}
    (thr,) = _points(reader, telemetry.SYNC_THROTTLED)
    assert thr.value == 1


def test_configure_telemetry_is_noop_without_connection_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(telemetry.CONNECTION_STRING_ENV, raising=False)
    called: list[Any] = []
    monkeypatch.setattr("azure.monitor.opentelemetry.configure_azure_monitor", lambda **kw: called.append(kw))
    assert telemetry.configure_telemetry() is False
    assert called == []


def test_configure_telemetry_once_with_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(telemetry.CONNECTION_STRING_ENV, "InstrumentationKey=00000000-0000-0000-0000-000000000000")
    monkeypatch.setattr(telemetry, "_configured", False)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("azure.monitor.opentelemetry.configure_azure_monitor", lambda **kw: calls.append(kw))
    cred = object()
    assert telemetry.configure_telemetry(credential=cred) is True  # type: ignore[arg-type]
    assert telemetry.configure_telemetry(credential=cred) is True  # type: ignore[arg-type]
    assert len(calls) == 1
    assert calls[0]["credential"] is cred
    assert calls[0]["connection_string"].startswith("InstrumentationKey=")


def test_worker_configured_telemetry_is_not_configured_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(telemetry.CONNECTION_STRING_ENV, "InstrumentationKey=00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv(telemetry.WORKER_TELEMETRY_ENV, "true")
    monkeypatch.setattr(telemetry, "_configured", False)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("azure.monitor.opentelemetry.configure_azure_monitor", lambda **kw: calls.append(kw))
    assert telemetry.configure_telemetry(credential=object()) is True  # type: ignore[arg-type]
    assert calls == []  # the Functions worker did it: a second exporter would write every log twice


def test_azure_sdk_logs_at_warning_once_exporting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(telemetry.CONNECTION_STRING_ENV, "InstrumentationKey=00000000-0000-0000-0000-000000000000")
    monkeypatch.setattr(telemetry, "_configured", False)
    monkeypatch.setattr("azure.monitor.opentelemetry.configure_azure_monitor", lambda **kw: None)
    levels = {name: logging.getLogger(name).level for name in telemetry.AZURE_SDK_LOGGERS}
    try:
        logging.getLogger("azure").setLevel(logging.INFO)
        assert telemetry.configure_telemetry(credential=object()) is True  # type: ignore[arg-type]
        assert logging.getLogger("azure").level == logging.WARNING
        assert logging.getLogger("azure.core.pipeline.policies.http_logging_policy").getEffectiveLevel() >= 30
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_default_credential_uses_the_managed_identity_when_configured() -> None:
    from shared.config import AuthMode, Settings

    settings = Settings.model_validate({"SYNC_AUTH_MODE": "certificate", "SYNC_MANAGED_IDENTITY_CLIENT_ID": "mi-1"})
    cred = telemetry._default_credential(settings)
    provider = cred.provider  # type: ignore[attr-defined]
    assert provider.settings.auth_mode is AuthMode.MANAGED_IDENTITY
    assert provider.settings.managed_identity_client_id == "mi-1"


def test_importing_does_not_configure_or_load_the_distro() -> None:
    # A fresh interpreter: importing the module must not start export nor import the heavy distro.
    code = (
        "import os, sys; os.environ['APPLICATIONINSIGHTS_CONNECTION_STRING'] = 'InstrumentationKey=x';"
        "import shared.telemetry as t;"
        "assert 'azure.monitor.opentelemetry' not in sys.modules, 'distro imported';"
        "assert t._configured is False"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)
