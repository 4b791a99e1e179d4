"""The typed work messages on the Service Bus queue: one pydantic model per ``kind`` (a discriminated union).

Every work message is built here (the model constructors and the few builders below) and every message the
worker receives is decoded here (``parse``). The wire format is the JSON object the models dump with their
aliases: ``{"version": 1, "kind": ..., "messageId": ..., "jobId": ..., "mapping": ..., "batch": ..., <payload>}``
with camelCase payload keys; messages already queued in that shape keep decoding. Unknown payload fields are
kept (``extra="allow"``) so a newer writer does not break an older reader within the same version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.domain.model import Side
from shared.errors import PermanentError
from shared.messaging.message_ids import bounded_message_id

SCHEMA_VERSION = 1
MAX_MESSAGE_ID_LENGTH = 128  # Service Bus limit


class MessageFormatError(PermanentError):
    """The message is not a valid work message (never transient: redelivering it cannot help)."""


class _Work(BaseModel):
    """The envelope every kind shares."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=True)

    version: Literal[1] = SCHEMA_VERSION
    message_id: str | None = Field(None, alias="messageId", max_length=MAX_MESSAGE_ID_LENGTH)
    job_id: str = Field("", alias="jobId")
    mapping: str = Field(min_length=1)
    batch: str | None = None  # the batch id within the job ("0" for single-message jobs)
    trigger: str | None = None  # #22 history: "timer" / "webhook" when the starter says so

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent on the queue (camelCase keys, no ``None``s, ``messageId`` always set)."""
        data = {
            "version": self.version,
            "kind": self.kind,  # type: ignore[attr-defined]
            **self.model_dump(by_alias=True, exclude_none=True, exclude_unset=True),
        }
        data.setdefault("messageId", default_message_id(data))
        return data

    def for_job(self, job_id: str, index: int) -> _Work:
        """This message as batch ``index`` of job ``job_id``, with its deterministic message id
        ``<job>:<kind>:<batch>`` (Service Bus duplicate detection drops a re-send)."""
        batch = self.batch if self.batch is not None else str(index)
        kind = self.kind  # type: ignore[attr-defined]
        return self.model_copy(update={"job_id": job_id, "batch": batch, "message_id": f"{job_id}:{kind}:{batch}"})


class MappingSync(_Work):
    """A mapping-wide job: its change feeds (everything when ``full``), parents first when a person asked."""

    kind: Literal["mapping-sync"] = "mapping-sync"
    full: bool = False
    parents_first: bool = Field(False, alias="parentsFirst")


class SyncBatch(_Work):
    """Synchronize-now ids (``direction``, ``force``), or a fanned-out page of changes (``scheduled``: the
    records are re-read on ``side``; ``fullRun``: the page belongs to a full synchronization)."""

    kind: Literal["sync-batch"] = "sync-batch"
    direction: str | None = None
    bc_ids: list[str] | None = Field(None, alias="bcIds")
    dataverse_ids: list[str] | None = Field(None, alias="dataverseIds")
    deleted_ids: list[str] | None = Field(None, alias="deletedIds")
    force: bool = False
    scheduled: bool = False
    full_run: bool = Field(False, alias="fullRun")
    # The page was checked against the mapping's filters before fan-out (not queried again).
    filtered: bool = False
    # Every record was uncoupled when the page was fanned out: created without looking their couplings up
    # again (a concurrent couple is refused by the store's claims, as for any create).
    uncoupled: bool = False
    side: Literal["bc", "dataverse"] | None = None


class RecordChanged(_Work):
    """One change a webhook announced (a BC record or a Dataverse row, ``deleted`` or not)."""

    kind: Literal["record-changed"] = "record-changed"
    bc_ids: list[str] | None = Field(None, alias="bcIds")
    dataverse_ids: list[str] | None = Field(None, alias="dataverseIds")
    deleted: bool = False


class UncoupleAll(_Work):
    """Every coupling of the mapping removed (and then the mapping itself when ``deleteMapping``)."""

    kind: Literal["uncouple-all"] = "uncouple-all"
    delete_mapping: bool = Field(False, alias="deleteMapping")


class MatchCouple(_Work):
    """Match-based coupling of these BC records (all when none are named)."""

    kind: Literal["match-couple"] = "match-couple"
    bc_ids: list[str] | None = Field(None, alias="bcIds")
    match_fields: list[dict[str, Any]] | None = Field(None, alias="matchFields")
    create_new_if_no_match: bool | None = Field(None, alias="createNewIfNoMatch")
    sync_after: bool | None = Field(None, alias="syncAfter")


class RetryErrors(_Work):
    """The open sync errors with these ids (or all of the mapping's) synchronized again."""

    kind: Literal["retry-errors"] = "retry-errors"
    ids: list[str] | None = None
    all: bool = False


class Plan(_Work):
    """A mapping-wide plan (#22): what a sync would do, written nowhere but the job's items."""

    kind: Literal["plan"] = "plan"
    full: bool = False


WorkMessage = Annotated[
    MappingSync | SyncBatch | RecordChanged | UncoupleAll | MatchCouple | RetryErrors | Plan,
    Field(discriminator="kind"),
]
MESSAGE_TYPES: tuple[type[_Work], ...] = (
    MappingSync,
    SyncBatch,
    RecordChanged,
    UncoupleAll,
    MatchCouple,
    RetryErrors,
    Plan,
)
MESSAGE_KINDS: tuple[str, ...] = tuple(t.model_fields["kind"].default for t in MESSAGE_TYPES)
_ADAPTER: TypeAdapter[Any] = TypeAdapter(WorkMessage)

# The job kinds of the API (``Job.kind``) and the message each starts when the starter names no messages.
_JOB_MESSAGE: dict[str, type[_Work]] = {
    "full": MappingSync,
    "incremental": MappingSync,
    "uncoupleAll": UncoupleAll,
    "deleteMapping": UncoupleAll,
    "matchCouple": MatchCouple,
    "retry": RetryErrors,
    "retryErrors": RetryErrors,  # the kind's name before #16
    "record": RecordChanged,
    "syncNow": SyncBatch,
    "plan": Plan,
}


def for_job_kind(job_kind: str, mapping: str, **payload: Any) -> _Work:
    """The one message a job of ``job_kind`` starts with (payload keys: field names or their aliases)."""
    try:
        model = _JOB_MESSAGE[job_kind]
    except KeyError:
        raise MessageFormatError(f"no work message starts a {job_kind!r} job", code="InvalidMessage") from None
    return model.model_validate({"mapping": mapping, "batch": "0", **payload})


def record_changed(mapping: str, side: Side, record_id: str, *, deleted: bool, stamp: str) -> RecordChanged:
    """A webhook's change of one record. Its message id is the notification's (``bc``/``dv``, mapping, id,
    the change's stamp or operation), so the same notification twice is dropped by duplicate detection."""
    ids = {"bc_ids": [record_id]} if side == Side.BC else {"dataverse_ids": [record_id]}
    prefix = "bc" if side == Side.BC else "dv"
    message_id = bounded_message_id(prefix, mapping, record_id, stamp)
    return RecordChanged(mapping=mapping, message_id=message_id, deleted=deleted, **ids)


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


def parse(message: Mapping[str, Any] | _Work) -> _Work:
    """A work message (a model, or its JSON object) -> its typed model; ``MessageFormatError`` if invalid."""
    if isinstance(message, _Work):
        return message
    if not isinstance(message, Mapping):
        raise MessageFormatError("message body is not a JSON object", code="InvalidMessage")
    if message.get("version") not in (None, SCHEMA_VERSION):
        raise MessageFormatError(f"unsupported message version {message.get('version')!r}", code="UnsupportedVersion")
    try:
        return _ADAPTER.validate_python(dict(message))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in e.errors())
        raise MessageFormatError(f"invalid work message: {problems}", code="InvalidMessage") from e


def decode(body: bytes | str | memoryview) -> _Work:
    """A body from the queue -> its typed model; ``MessageFormatError`` for anything malformed."""
    try:
        raw = bytes(body).decode("utf-8") if not isinstance(body, str) else body
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MessageFormatError(f"message body is not UTF-8 JSON: {e}", code="InvalidMessage") from e
    return parse(data)


def encode(message: Mapping[str, Any] | _Work) -> bytes:
    """The validated JSON body (compact, UTF-8)."""
    return json.dumps(parse(message).to_wire(), separators=(",", ":")).encode()
