"""The typed work messages: wire round trip, backward-compatible decoding, and the Service Bus envelope."""

from __future__ import annotations

import json

import pytest

from shared.domain.model import Side
from shared.errors import PermanentError
from shared.messaging import work
from shared.messaging.messages import to_service_bus_message
from shared.messaging.work import (
    MESSAGE_KINDS,
    MappingSync,
    MatchCouple,
    MessageFormatError,
    Plan,
    RecordChanged,
    RetryErrors,
    SyncBatch,
    UncoupleAll,
    decode,
    default_message_id,
    encode,
)


def batch_message(**overrides: object) -> dict[str, object]:
    return {
        "version": 1,
        "kind": "sync-batch",
        "messageId": "job-1:sync-batch:3",
        "jobId": "job-1",
        "mapping": "customers",
        "batch": "3",
        "direction": "toDataverse",
        "bcIds": ["a", "b"],
        **overrides,
    }


def test_round_trip_keeps_payload_and_unknown_fields() -> None:
    original = batch_message(extraField={"x": 1})
    decoded = decode(encode(original))
    assert isinstance(decoded, SyncBatch)
    assert decoded.bc_ids == ["a", "b"] and decoded.job_id == "job-1" and decoded.direction == "toDataverse"
    assert decoded.to_wire() == original


# Messages exactly as the service queued them before the typed models (already on queues when this deploys).
LEGACY = [
    ({"version": 1, "kind": "mapping-sync", "messageId": "j:mapping-sync:0", "jobId": "j", "mapping": "CUSTOMER",
      "batch": "0", "full": True, "parentsFirst": True}, MappingSync, {"full": True, "parents_first": True}),
    ({"version": 1, "kind": "mapping-sync", "messageId": "j:mapping-sync:0", "jobId": "j", "mapping": "CUSTOMER",
      "batch": "0", "full": False, "trigger": "timer"}, MappingSync, {"full": False, "trigger": "timer"}),
    ({"version": 1, "kind": "sync-batch", "messageId": "j:sync-batch:b2", "jobId": "j", "mapping": "CUSTOMER",
      "batch": "b2", "direction": "bidirectional", "scheduled": True, "fullRun": False, "side": "dataverse",
      "dataverseIds": ["d1"], "deletedIds": ["d9"]}, SyncBatch,
     {"scheduled": True, "full_run": False, "side": "dataverse", "dataverse_ids": ["d1"], "deleted_ids": ["d9"]}),
    ({"version": 1, "kind": "record-changed", "jobId": "", "mapping": "CUSTOMER", "messageId": "bc:CUSTOMER:b1:t",
      "bcIds": ["b1"], "deleted": True}, RecordChanged, {"bc_ids": ["b1"], "deleted": True, "job_id": ""}),
    ({"version": 1, "kind": "uncouple-all", "messageId": "j:uncouple-all:0", "jobId": "j", "mapping": "CUSTOMER",
      "batch": "0", "deleteMapping": True}, UncoupleAll, {"delete_mapping": True}),
    ({"version": 1, "kind": "match-couple", "messageId": "j:match-couple:0", "jobId": "j", "mapping": "CURRENCY",
      "batch": "0", "bcIds": ["c1"], "matchFields": [{"bc": "code", "dataverse": "isocurrencycode"}],
      "createNewIfNoMatch": True, "syncAfter": False}, MatchCouple,
     {"bc_ids": ["c1"], "create_new_if_no_match": True, "sync_after": False,
      "match_fields": [{"bc": "code", "dataverse": "isocurrencycode"}]}),
    ({"version": 1, "kind": "retry-errors", "messageId": "j:retry-errors:0", "jobId": "j", "mapping": "CUSTOMER",
      "batch": "0", "ids": ["e1", "e2"]}, RetryErrors, {"ids": ["e1", "e2"], "all": False}),
    ({"version": 1, "kind": "retry-errors", "messageId": "j:retry-errors:0", "jobId": "j", "mapping": "CUSTOMER",
      "batch": "0", "all": True}, RetryErrors, {"ids": None, "all": True}),
    ({"version": 1, "kind": "plan", "messageId": "j:plan:0", "jobId": "j", "mapping": "CUSTOMER", "batch": "0",
      "full": True}, Plan, {"full": True}),
]  # fmt: skip


@pytest.mark.parametrize(("wire", "model", "fields"), LEGACY, ids=[w["kind"] for w, _, _ in LEGACY])
def test_already_queued_messages_decode_into_their_kind_and_re_encode_unchanged(
    wire: dict[str, object], model: type, fields: dict[str, object]
) -> None:
    decoded = decode(json.dumps(wire).encode())
    assert type(decoded) is model
    assert {k: getattr(decoded, k) for k in fields} == fields
    assert decoded.to_wire() == wire
    assert decode(encode(decoded)) == decoded


def test_every_kind_has_one_model() -> None:
    assert MESSAGE_KINDS == (
        "mapping-sync", "sync-batch", "record-changed", "uncouple-all", "match-couple", "retry-errors", "plan"
    )  # fmt: skip
    for kind in MESSAGE_KINDS:
        assert decode(encode(batch_message(kind=kind))).kind == kind


def test_a_job_kind_builds_its_message_and_a_job_stamps_ids() -> None:
    m = work.for_job_kind("matchCouple", "CURRENCY", bcIds=["c1"], matchFields=None, createNewIfNoMatch=True)
    assert isinstance(m, MatchCouple) and m.bc_ids == ["c1"] and m.create_new_if_no_match is True
    stamped = m.for_job("job-7", 0)
    assert stamped.to_wire() == {
        "version": 1, "kind": "match-couple", "messageId": "job-7:match-couple:0", "jobId": "job-7",
        "mapping": "CURRENCY", "batch": "0", "bcIds": ["c1"], "createNewIfNoMatch": True,
    }  # fmt: skip
    assert isinstance(work.for_job_kind("deleteMapping", "X", deleteMapping=True), UncoupleAll)
    assert SyncBatch(mapping="M", batch="b3").for_job("j", 0).message_id == "j:sync-batch:b3"
    assert SyncBatch(mapping="M").for_job("j", 4).message_id == "j:sync-batch:4"
    with pytest.raises(MessageFormatError):
        work.for_job_kind("reboot", "M")


def test_record_changed_ids_are_the_notifications() -> None:
    bc = work.record_changed("CUSTOMER", Side.BC, "b1", deleted=False, stamp="2024-01-01T00:00:00Z")
    assert bc.to_wire() == {
        "version": 1, "kind": "record-changed", "mapping": "CUSTOMER",
        "messageId": "bc:CUSTOMER:b1:2024-01-01T00:00:00Z", "deleted": False, "bcIds": ["b1"],
    }  # fmt: skip
    dv = work.record_changed("CUSTOMER", Side.DATAVERSE, "d1", deleted=True, stamp="op" * 100)
    assert dv.dataverse_ids == ["d1"] and dv.deleted and len(dv.to_wire()["messageId"]) <= 128


def test_service_bus_message_carries_id_subject_and_correlation() -> None:
    sb = to_service_bus_message(batch_message())
    assert sb.message_id == "job-1:sync-batch:3"
    assert sb.subject == "sync-batch" and sb.correlation_id == "job-1"
    assert sb.content_type == "application/json"
    assert json.loads(b"".join(sb.body))["bcIds"] == ["a", "b"]


def test_message_id_is_deterministic_when_missing() -> None:
    job = {"kind": "mapping-sync", "jobId": "j", "mapping": "m", "batch": "0"}
    assert default_message_id(job) == "j:mapping-sync:0"
    change = {"kind": "record-changed", "jobId": "", "mapping": "m", "dataverseIds": ["x"]}
    assert default_message_id(change) == default_message_id(dict(change))
    assert default_message_id(change) != default_message_id({**change, "dataverseIds": ["y"]})
    assert to_service_bus_message(change).message_id == default_message_id(change)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps(batch_message(version=2)).encode(), "unsupported message version"),
        (json.dumps(batch_message(kind="reboot")).encode(), "kind"),
        (json.dumps({"mapping": "m"}).encode(), "kind"),
        (json.dumps(batch_message(mapping="")).encode(), "mapping"),
        (json.dumps(batch_message(bcIds="a")).encode(), "bcIds"),
        (json.dumps(batch_message(kind="record-changed", deleted="sometimes")).encode(), "deleted"),
        (json.dumps(batch_message(side="left")).encode(), "side"),
    ],
)
def test_malformed_messages_are_permanent_with_a_clear_reason(body: bytes, fragment: str) -> None:
    with pytest.raises(MessageFormatError) as info:
        decode(body)
    assert isinstance(info.value, PermanentError) and not info.value.transient
    assert fragment in str(info.value)
