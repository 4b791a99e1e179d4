from __future__ import annotations

import json

import pytest

from shared.errors import PermanentError
from shared.messaging.messages import (
    MESSAGE_KINDS,
    MessageFormatError,
    decode,
    decode_dict,
    default_message_id,
    encode,
    to_service_bus_message,
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
    assert decoded.kind == "sync-batch" and decoded.bc_ids == ["a", "b"] and decoded.job_id == "job-1"
    assert decode_dict(encode(original)) == original


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


@pytest.mark.parametrize("kind", MESSAGE_KINDS)
def test_every_kind_is_accepted(kind: str) -> None:
    assert decode(encode(batch_message(kind=kind))).kind == kind


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps(batch_message(version=2)).encode(), "unsupported message version"),
        (json.dumps(batch_message(kind="reboot")).encode(), "kind"),
        (json.dumps(batch_message(mapping="")).encode(), "mapping"),
        (json.dumps(batch_message(bcIds="a")).encode(), "bcIds"),
    ],
)
def test_malformed_messages_are_permanent_with_a_clear_reason(body: bytes, fragment: str) -> None:
    with pytest.raises(MessageFormatError) as info:
        decode(body)
    assert isinstance(info.value, PermanentError) and not info.value.transient
    assert fragment in str(info.value)
