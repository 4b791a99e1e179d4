"""The versioned JSON schema of the work messages on the Service Bus queue.

A message is a JSON object ``{"version": 1, "kind": ..., "messageId": ..., "jobId": ..., "mapping": ...,
<payload>}``. On the wire: body = that JSON (UTF-8), ``message_id`` = ``messageId`` (deterministic, so the
queue's duplicate detection drops re-sends), ``subject`` = kind, ``correlation_id`` = job id.
A body that does not validate is a permanent failure (``MessageFormatError``): redelivering it cannot help.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from azure.servicebus import ServiceBusMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import PermanentError

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
MessageKind = Literal[
    "mapping-sync", "sync-batch", "record-changed", "uncouple-all", "match-couple", "retry-errors", "plan"
]
MESSAGE_KINDS: tuple[str, ...] = (
    "mapping-sync",
    "sync-batch",
    "record-changed",
    "uncouple-all",
    "match-couple",
    "retry-errors",
)
MAX_MESSAGE_ID_LENGTH = 128  # Service Bus limit


class MessageFormatError(PermanentError):
    """The message body is not a valid work message (never transient)."""


class WorkMessage(BaseModel):
    """One work message. Unknown payload fields are kept (``extra="allow"``) so newer writers do not break
    older readers within the same version."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=True)

    version: Literal[1] = SCHEMA_VERSION
    kind: MessageKind
    message_id: str | None = Field(None, alias="messageId", max_length=MAX_MESSAGE_ID_LENGTH)
    job_id: str = Field("", alias="jobId")
    mapping: str = Field(min_length=1)
    batch: str | None = None  # the batch id within the job ("0" for single-message jobs)
    direction: str | None = None
    bc_ids: list[str] | None = Field(None, alias="bcIds")
    dataverse_ids: list[str] | None = Field(None, alias="dataverseIds")
    cursor: str | None = None
    full: bool | None = None
    force: bool | None = None
    deleted: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(by_alias=True, exclude_none=True)
        data.setdefault("messageId", self.effective_message_id)
        return data

    @property
    def effective_message_id(self) -> str:
        return self.message_id or default_message_id(self.model_dump(by_alias=True, exclude_none=True))


def default_message_id(message: Mapping[str, Any]) -> str:
    """``<jobId>:<kind>:<batch>`` when the message belongs to a job batch, else a hash of the content
    (webhook ``record-changed`` messages: the same change twice is the same message)."""
    job_id, kind, batch = message.get("jobId"), message.get("kind"), message.get("batch")
    if job_id and batch is not None:
        candidate = f"{job_id}:{kind}:{batch}"
        if len(candidate) <= MAX_MESSAGE_ID_LENGTH:
            return candidate
    # Same content -> same id, whether or not the dict went through the model (version, None fields).
    content = {k: v for k, v in message.items() if k not in ("messageId", "version") and v is not None}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    return f"{kind}:{digest[:40]}"


def validate(message: Mapping[str, Any]) -> WorkMessage:
    try:
        return WorkMessage.model_validate(dict(message))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in e.errors())
        raise MessageFormatError(f"invalid work message: {problems}", code="InvalidMessage") from e


def encode(message: Mapping[str, Any]) -> bytes:
    """Validated JSON body (compact, UTF-8)."""
    return json.dumps(validate(message).to_dict(), separators=(",", ":")).encode()


def decode(body: bytes | str | memoryview) -> WorkMessage:
    """Body from the queue -> ``WorkMessage``; raises ``MessageFormatError`` for anything malformed."""
    try:
        raw = bytes(body).decode("utf-8") if not isinstance(body, str) else body
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MessageFormatError(f"message body is not UTF-8 JSON: {e}", code="InvalidMessage") from e
    if not isinstance(data, dict):
        raise MessageFormatError("message body is not a JSON object", code="InvalidMessage")
    if data.get("version") not in (None, SCHEMA_VERSION):
        raise MessageFormatError(f"unsupported message version {data.get('version')!r}", code="UnsupportedVersion")
    return validate(data)


def decode_dict(body: bytes | str | memoryview) -> dict[str, Any]:
    """Like ``decode`` but returns the plain dict (camelCase keys) the engine's ``JobService.handle`` takes."""
    return decode(body).to_dict()


def to_service_bus_message(message: Mapping[str, Any]) -> ServiceBusMessage:
    work = validate(message)
    data = work.to_dict()
    return ServiceBusMessage(
        json.dumps(data, separators=(",", ":")),
        message_id=data["messageId"],
        subject=work.kind,
        correlation_id=work.job_id or None,
        content_type=CONTENT_TYPE,
        application_properties={"kind": work.kind, "version": work.version, "mapping": work.mapping},
    )
