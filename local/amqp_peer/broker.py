"""Queue state of the local peer: ready/scheduled/locked messages, delivery counts, dead-lettering and
duplicate detection. No I/O here; the proton handler in ``server.py`` drives it (single-threaded)."""

from __future__ import annotations

import heapq
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proton import symbol, timestamp

from local.amqp_peer import codec

DEAD_LETTER_SUFFIX = "/$deadletterqueue"
MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
LOCK_LOST_EXPIRED = "lock expired"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class StoredMessage:
    """One message as the peer keeps it: the sender's sections, raw, plus broker state."""

    seq: int
    annotations: dict[Any, Any]  # message annotations (symbol keys), x-opt-* added on delivery
    properties_raw: bytes  # properties section or b""
    app_properties: dict[str, Any]
    app_properties_raw: bytes  # re-encoded only when the broker changes app properties
    body_raw: bytes  # body sections and footer, untouched
    message_id: Any
    enqueued_ms: int
    available_at: float = 0.0  # time.time() when a scheduled message becomes visible
    deliveries: int = 0  # times handed to a peek-lock receiver (header delivery-count = previous ones)

    def encode(self, *, extra_annotations: dict[str, Any], delivery_count: int) -> bytes:
        annotations = dict(self.annotations)
        annotations.update(codec.sym_map(extra_annotations))
        return b"".join(
            (
                codec.encode_header(delivery_count, first_acquirer=delivery_count == 0),
                codec.encode_described(codec.MESSAGE_ANNOTATIONS, annotations),
                self.properties_raw,
                self.app_properties_raw,
                self.body_raw,
            )
        )

    def set_app_properties(self, values: dict[str, Any]) -> None:
        self.app_properties.update(values)
        self.app_properties_raw = codec.encode_described(codec.APPLICATION_PROPERTIES, self.app_properties)


def parse_message(raw: bytes, seq: int) -> StoredMessage:
    """Sections of one encoded (non-batch) message -> StoredMessage. Raises ``codec.CodecError``."""
    annotations: dict[Any, Any] = {}
    properties_raw = app_raw = b""
    app: dict[str, Any] = {}
    body: list[bytes] = []
    message_id: Any = None
    for code, section in codec.split_sections(raw):
        if code == codec.MESSAGE_ANNOTATIONS:
            annotations = dict(codec.section_value(section) or {})
        elif code == codec.PROPERTIES:
            properties_raw = section
            values = codec.section_value(section) or []
            message_id = values[0] if values else None
        elif code == codec.APPLICATION_PROPERTIES:
            app_raw = section
            app = dict(codec.section_value(section) or {})
        elif code in (codec.DATA, codec.AMQP_SEQUENCE, codec.AMQP_VALUE, codec.FOOTER):
            body.append(section)
        # header and delivery annotations of the sender are not kept (the broker writes its own)
    now = now_ms()
    scheduled = annotations.get(symbol("x-opt-scheduled-enqueue-time"))
    available_at = float(scheduled) / 1000 if scheduled else 0.0
    return StoredMessage(
        seq=seq,
        annotations=annotations,
        properties_raw=properties_raw,
        app_properties=app,
        app_properties_raw=app_raw,
        body_raw=b"".join(body),
        message_id=message_id,
        enqueued_ms=now,
        available_at=available_at,
    )


@dataclass
class Lock:
    token: bytes
    queue: Queue
    message: StoredMessage
    locked_until: float


@dataclass
class Queue:
    name: str
    ready: list[tuple[int, StoredMessage]] = field(default_factory=list)  # heap by sequence number
    scheduled: list[tuple[float, int, StoredMessage]] = field(default_factory=list)
    locked: int = 0
    dedupe: dict[str, float] = field(default_factory=dict)  # message id -> expires at
    duplicates_dropped: int = 0

    def push(self, message: StoredMessage) -> None:
        heapq.heappush(self.ready, (message.seq, message))

    def pop(self) -> StoredMessage | None:
        return heapq.heappop(self.ready)[1] if self.ready else None

    def counts(self) -> dict[str, int]:
        return {
            "active": len(self.ready),
            "scheduled": len(self.scheduled),
            "locked": self.locked,
            "duplicatesDropped": self.duplicates_dropped,
        }


class Broker:
    def __init__(
        self,
        *,
        max_delivery_count: int = 10,
        lock_duration: float = 30.0,
        duplicate_window: float = 600.0,
        on_ready: Callable[[Queue], None] = lambda q: None,
    ) -> None:
        self.max_delivery_count = max_delivery_count
        self.lock_duration = lock_duration
        self.duplicate_window = duplicate_window
        self.on_ready = on_ready  # called when a queue may have deliverable messages
        self.queues: dict[str, Queue] = {}
        self.locks: dict[bytes, Lock] = {}
        self._seq = itertools.count(1)

    # ------------------------------------------------------------------ queues
    def queue(self, name: str) -> Queue:
        key = name.lower()
        if key not in self.queues:  # created on demand, like an emulator config listing every queue
            self.queues[key] = Queue(key)
        return self.queues[key]

    def dead_letter_queue(self, queue: Queue) -> Queue:
        return self.queue(queue.name + DEAD_LETTER_SUFFIX)

    # ------------------------------------------------------------------ enqueue
    def enqueue_raw(self, queue_name: str, raw: bytes) -> list[int]:
        """An incoming transfer (single message or batch) -> sequence numbers of the accepted ones."""
        sections = codec.split_sections(raw)
        payloads = codec.data_sections(sections) if codec.is_batch(sections) else [raw]
        queue = self.queue(queue_name)
        seqs = [seq for payload in payloads if (seq := self.enqueue(queue, payload)) is not None]
        self.on_ready(queue)
        return seqs

    def enqueue(self, queue: Queue, raw: bytes) -> int | None:
        message = parse_message(raw, next(self._seq))
        if self._is_duplicate(queue, message.message_id):
            queue.duplicates_dropped += 1
            return None
        if message.available_at > time.time():
            heapq.heappush(queue.scheduled, (message.available_at, message.seq, message))
        else:
            queue.push(message)
        return message.seq

    def _is_duplicate(self, queue: Queue, message_id: Any) -> bool:
        if message_id is None or self.duplicate_window <= 0 or queue.name.endswith(DEAD_LETTER_SUFFIX):
            return False
        key = str(message_id)
        now = time.time()
        if queue.dedupe.get(key, 0.0) > now:
            return True
        queue.dedupe[key] = now + self.duplicate_window
        return False

    # ------------------------------------------------------------------ delivery
    def take(self, queue: Queue, *, peek_lock: bool) -> tuple[bytes, bytes] | None:
        """Next message for a receiver -> (delivery tag = lock token, encoded message)."""
        message = queue.pop()
        if message is None:
            return None
        token = uuid.uuid4().bytes
        extra: dict[str, Any] = {
            "x-opt-sequence-number": message.seq,
            "x-opt-enqueued-time": timestamp(message.enqueued_ms),
        }
        delivery_count = message.deliveries
        if peek_lock:
            message.deliveries += 1
            until = time.time() + self.lock_duration
            extra["x-opt-locked-until"] = timestamp(int(until * 1000))
            self.locks[token] = Lock(token, queue, message, until)
            queue.locked += 1
        return token, message.encode(extra_annotations=extra, delivery_count=delivery_count)

    def _unlock(self, token: bytes) -> Lock | None:
        lock = self.locks.pop(token, None)
        if lock is not None:
            lock.queue.locked -= 1
        return lock

    def complete(self, token: bytes) -> bool:
        return self._unlock(token) is not None

    def abandon(self, token: bytes, *, annotations: dict[Any, Any] | None = None, counted: bool = True) -> bool:
        lock = self._unlock(token)
        if lock is None:
            return False
        if annotations:
            lock.message.annotations.update(annotations)
        self._requeue(lock, counted=counted)
        return True

    def dead_letter(self, token: bytes, reason: str | None, description: str | None) -> bool:
        lock = self._unlock(token)
        if lock is None:
            return False
        self._move_to_dead_letter(lock.queue, lock.message, reason or "", description or "")
        return True

    def _requeue(self, lock: Lock, *, counted: bool) -> None:
        message = lock.message
        if not counted:
            message.deliveries -= 1
        if counted and message.deliveries >= self.max_delivery_count:
            self._move_to_dead_letter(
                lock.queue,
                message,
                MAX_DELIVERY_COUNT_EXCEEDED,
                f"Message could not be consumed after {self.max_delivery_count} delivery attempts.",
            )
            return
        lock.queue.push(message)
        self.on_ready(lock.queue)

    def _move_to_dead_letter(self, queue: Queue, message: StoredMessage, reason: str, description: str) -> None:
        message.set_app_properties({"DeadLetterReason": reason, "DeadLetterErrorDescription": description})
        message.annotations[symbol("x-opt-deadletter-source")] = queue.name
        dlq = self.dead_letter_queue(queue)
        dlq.push(message)
        self.on_ready(dlq)

    def renew(self, token: bytes) -> float | None:
        lock = self.locks.get(token)
        if lock is None:
            return None
        lock.locked_until = time.time() + self.lock_duration
        return lock.locked_until

    # ------------------------------------------------------------------ timers
    def tick(self) -> None:
        """Expire locks (redeliver with count+1) and release due scheduled messages."""
        now = time.time()
        for token in [t for t, lock in self.locks.items() if lock.locked_until <= now]:
            lock = self._unlock(token)
            if lock is not None:
                self._requeue(lock, counted=True)
        for queue in self.queues.values():
            released = False
            while queue.scheduled and queue.scheduled[0][0] <= now:
                queue.push(heapq.heappop(queue.scheduled)[2])
                released = True
            if released:
                self.on_ready(queue)
            if len(queue.dedupe) > 10_000:
                queue.dedupe = {k: v for k, v in queue.dedupe.items() if v > now}

    # ------------------------------------------------------------------ management helpers
    def peek(self, queue: Queue, from_seq: int, count: int) -> list[bytes]:
        candidates = sorted(
            [m for _, m in queue.ready]
            + [lock.message for lock in self.locks.values() if lock.queue is queue]
            + [m for _, _, m in queue.scheduled],
            key=lambda m: m.seq,
        )
        out = []
        for message in candidates:
            if message.seq >= from_seq and len(out) < count:
                extra = {
                    "x-opt-sequence-number": message.seq,
                    "x-opt-enqueued-time": timestamp(message.enqueued_ms),
                }
                out.append(message.encode(extra_annotations=extra, delivery_count=message.deliveries))
        return out

    def stats(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for name, queue in self.queues.items():
            if name.endswith(DEAD_LETTER_SUFFIX):
                continue
            entry = queue.counts()
            dlq = self.queues.get(name + DEAD_LETTER_SUFFIX)
            entry["deadLetter"] = len(dlq.ready) if dlq else 0
            out[name] = entry
        return out

    def purge(self) -> None:
        """Drops every message, lock and duplicate-detection entry (tests)."""
        self.locks.clear()
        for queue in self.queues.values():
            queue.ready.clear()
            queue.scheduled.clear()
            queue.dedupe.clear()
            queue.locked = 0
            queue.duplicates_dropped = 0
