"""The worker's dispatch table: each kind of work message reaches its handler, typed; a malformed one is a
permanent failure that fails the job it names and completes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.messaging import work
from shared.services.jobs import JobService
from shared.services.sync_service import SyncOutcome
from tests.fake_services import fake_engine

HANDLERS = {
    "mapping-sync": "_mapping_sync",
    "sync-batch": "_sync_batch",
    "record-changed": "record_changed",
    "uncouple-all": "_uncouple_all",
    "match-couple": "_match",
    "retry-errors": "_retry",
    "plan": "_plan",
}


def recording(jobs: JobService) -> list[tuple[str, str, Any, str]]:
    """Replaces every handler by a recorder of (handler, mapping, message, job id)."""
    calls: list[tuple[str, str, Any, str]] = []
    for name in [*HANDLERS.values(), "_option_set"]:

        async def record(mapping: Any, msg: Any, job_id: str, _name: str = name) -> SyncOutcome:
            calls.append((_name, mapping.name, msg, job_id))
            out = SyncOutcome()
            out.counts["modified"] = 1
            return out

        setattr(jobs, name, record)
    return calls


@pytest.mark.parametrize("kind", sorted(HANDLERS))
async def test_each_kind_reaches_its_handler_as_its_model(kind: str) -> None:
    assert set(HANDLERS) == set(work.MESSAGE_KINDS)
    engine = fake_engine()
    jobs = JobService(engine)
    calls = recording(jobs)
    body = {"version": 1, "kind": kind, "jobId": "", "mapping": "CUSTOMER", "bcIds": ["b1"]}
    await jobs.receive(json.dumps(body).encode())
    [(handler, mapping, msg, job_id)] = calls
    assert handler == HANDLERS[kind] and mapping == "CUSTOMER" and job_id == ""
    assert msg.kind == kind and type(msg) is type(work.parse(body))


@pytest.mark.parametrize(("kind", "option_set"), [
    ("match-couple", True), ("record-changed", True), ("sync-batch", True), ("retry-errors", True),
    ("mapping-sync", False), ("uncouple-all", False), ("plan", False),
])  # fmt: skip
async def test_an_option_mapping_compares_its_option_set_for_the_record_kinds(kind: str, option_set: bool) -> None:
    jobs = JobService(fake_engine())
    calls = recording(jobs)
    await jobs.handle({"kind": kind, "mapping": "PAYMENT TERMS"})
    assert [c[0] for c in calls] == ["_option_set" if option_set else HANDLERS[kind]]


async def test_a_job_message_counts_into_its_job_and_finishes_it() -> None:
    engine = fake_engine()
    jobs = JobService(engine)
    calls = recording(jobs)
    job = await jobs.start("CUSTOMER", "retry", None, ids=["e1"])
    [msg] = engine.publisher.take()
    assert msg == {"version": 1, "kind": "retry-errors", "messageId": f"{job.job_id}:retry-errors:0",
                   "jobId": job.job_id, "mapping": "CUSTOMER", "batch": "0", "ids": ["e1"]}  # fmt: skip
    await jobs.receive(json.dumps(msg))
    assert calls[0][0] == "_retry" and calls[0][2].ids == ["e1"] and calls[0][3] == job.job_id
    done = await engine.jobs.get(job.job_id)
    assert done.status == "succeeded" and done.counts["modified"] == 1


@pytest.mark.parametrize(
    "patch",
    [{"kind": "reboot"}, {"mapping": ""}, {"full": "sometimes"}, {"version": 2}],
    ids=["unknown kind", "no mapping", "full not a bool", "newer version"],
)
async def test_an_invalid_message_fails_its_job_and_completes(patch: dict[str, Any]) -> None:
    engine = fake_engine()
    jobs = JobService(engine)
    calls = recording(jobs)
    job = await jobs.start("CUSTOMER", "incremental", "bidirectional", full=False)
    [msg] = engine.publisher.take()
    await jobs.receive(json.dumps({**msg, **patch}).encode())  # does not raise: redelivery cannot help
    assert calls == []
    failed = await engine.jobs.get(job.job_id)
    assert failed.status == "failed" and "message" in (failed.detail or "")
    with pytest.raises(work.MessageFormatError):
        await jobs.handle({**msg, **patch})


@pytest.mark.parametrize("body", [b"not json", b"\xff", b"[1]", b'{"kind": "plan"}'])
async def test_a_body_that_names_no_job_is_dropped(body: bytes) -> None:
    jobs = JobService(fake_engine())
    calls = recording(jobs)
    await jobs.receive(body)
    assert calls == []
