"""The proton side of the local peer: accepts connections (SASL ANONYMOUS, no TLS), answers the `$cbs`
put-token exchange and the `$management` operations, and moves messages between links and the
``Broker``. Runs in its own process; ``Container.run()`` blocks and a handler exception would stop it,
so every event handler is guarded.

With a ``TokenValidator`` (`--jwks-url`, `--app-id`), the peer checks who a token belongs to, as a namespace
with local (SAS) auth disabled and RBAC on it does: a put-token must carry an Entra JWT for
`https://servicebus.azure.net` of an accepted app id (the managed identity); SAS tokens and other
identities' tokens are answered `401`, and a link to an entity the connection holds no accepted token for is
refused with `amqp:unauthorized-access`. Without a validator every token is accepted (unit tests)."""

from __future__ import annotations

import heapq
import json
import logging
import queue as thread_queue
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

import cproton
from proton import Condition, Delivery, Endpoint, Handler, Link, Message, symbol, timestamp
from proton.reactor import Container

from local.amqp_peer import codec
from local.amqp_peer.broker import Broker, Queue
from local.simcore import TokenError, TokenValidator

log = logging.getLogger("local.amqp_peer")

CBS = "$cbs"
MANAGEMENT_SUFFIX = "/$management"
MAX_MESSAGE_SIZE = 262_144  # Standard tier; the SDK sizes ServiceBusMessageBatch from the attach
TICK_SECONDS = 0.05
DEAD_LETTER_CONDITION = "com.microsoft:dead-letter"
LOCK_LOST_CONDITION = "com.microsoft:message-lock-lost"


def entity_path(address: str | None) -> str:
    """`amqp://host:port/sync-work` or `sb://ns/sync-work` or `sync-work` -> `sync-work` (lowercase)."""
    if not address:
        return ""
    if "://" in address:
        address = urlparse(address).path
    return address.strip("/").lower()


def _guarded(fn: Callable[..., None]) -> Callable[..., None]:
    def wrapper(self: Peer, event: Any) -> None:
        try:
            fn(self, event)
        except Exception:  # a raising handler would stop Container.run()
            log.exception("error in %s", fn.__name__)

    wrapper.__name__ = fn.__name__
    return wrapper


def _endpoint_key(endpoint: Any) -> int:
    """The C object behind a proton wrapper: proton makes a new Python wrapper for every event, so two
    wrappers of one link or connection are equal only by this key, never by ``is``."""
    return int(cproton.ffi.cast("uintptr_t", endpoint._impl))


class Peer(Handler):
    def __init__(self, broker: Broker, auth: TokenValidator | None = None) -> None:
        super().__init__()
        self.auth = auth
        self.authorized: dict[int, set[str]] = {}  # connection -> entity paths ("" = namespace) it holds tokens for
        self.refused_tokens = 0
        self.broker = broker
        broker.on_ready = self.pump
        self.consumers: dict[str, list[Link]] = {}
        self.calls: thread_queue.Queue[tuple[Callable[[], Any], Future[Any]]] = thread_queue.Queue()
        self.container: Container | None = None

    # ------------------------------------------------------------------ connection lifecycle
    @_guarded
    def on_connection_bound(self, event: Any) -> None:
        sasl = event.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")

    @_guarded
    def on_connection_remote_open(self, event: Any) -> None:
        conn = event.connection
        if conn.state & Endpoint.LOCAL_UNINIT:
            conn.container = "local-amqp-peer"
            conn.open()

    @_guarded
    def on_session_remote_open(self, event: Any) -> None:
        if event.session.state & Endpoint.LOCAL_UNINIT:
            event.session.open()

    @_guarded
    def on_link_remote_open(self, event: Any) -> None:
        link = event.link
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        # The SDK checks that the attach reply echoes its source/target and settle modes.
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        if link.is_receiver:
            target = entity_path(link.remote_target.address)
            if not self._may_attach(link.connection, target):
                link.open()
                link.condition = Condition(
                    "amqp:unauthorized-access",
                    f"Unauthorized access. No accepted token for '{target}' on this connection.",
                )
                link.close()
                return
            link.max_message_size = MAX_MESSAGE_SIZE
            link.open()
            link.flow(1000)
            return
        path = entity_path(link.remote_source.address)
        if not self._may_attach(link.connection, path):
            link.open()
            link.condition = Condition(
                "amqp:unauthorized-access", f"Unauthorized access. No accepted token for '{path}' on this connection."
            )
            link.close()
            return
        link.open()
        if path != CBS and not path.endswith(MANAGEMENT_SUFFIX):
            self.consumers.setdefault(self.broker.queue(path).name, []).append(link)

    @_guarded
    def on_link_remote_close(self, event: Any) -> None:
        link = event.link
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.close()
        key = _endpoint_key(link)
        self._forget(lambda candidate: _endpoint_key(candidate) == key)

    @_guarded
    def on_session_remote_close(self, event: Any) -> None:
        if not event.session.state & Endpoint.LOCAL_CLOSED:
            event.session.close()

    @_guarded
    def on_connection_remote_close(self, event: Any) -> None:
        conn = event.connection
        if not conn.state & Endpoint.LOCAL_CLOSED:
            conn.close()
        self._forget_connection(conn)

    @_guarded
    def on_transport_tail_closed(self, event: Any) -> None:
        # The client's end of the socket closed (a killed process): no delivery may go to its links from
        # now on, or it stays locked by nobody until the lock expires, as Service Bus detaches them.
        if event.connection is not None:
            self._forget_connection(event.connection)

    @_guarded
    def on_transport_closed(self, event: Any) -> None:
        # A killed client: its locks stay until they expire (as in Service Bus); only its links go.
        conn = event.connection
        if conn is not None:
            self._forget_connection(conn)
            self.authorized.pop(_endpoint_key(conn), None)
            conn.free()

    def _may_attach(self, connection: Any, path: str) -> bool:
        if self.auth is None or path == CBS:
            return True
        entity = path[: -len(MANAGEMENT_SUFFIX)] if path.endswith(MANAGEMENT_SUFFIX) else path
        held = self.authorized.get(_endpoint_key(connection), set())
        return "" in held or entity in held or entity.split("/")[0] in held

    def queue_stats(self) -> dict[str, dict[str, int]]:
        """The broker's counts per queue plus ``receivers``: the open receiver links (competing consumers)."""
        out = self.broker.stats()
        for name, entry in out.items():
            entry["receivers"] = sum(1 for link in self.consumers.get(name, []) if link.state & Endpoint.LOCAL_ACTIVE)
        return out

    def _forget_connection(self, conn: Any) -> None:
        key = _endpoint_key(conn)
        self._forget(lambda link: _endpoint_key(link.connection) == key)

    def _forget(self, match: Callable[[Link], bool]) -> None:
        for name, links in self.consumers.items():
            self.consumers[name] = [link for link in links if not match(link)]

    # ------------------------------------------------------------------ flow and deliveries
    @_guarded
    def on_link_flow(self, event: Any) -> None:
        link = event.link
        if link.is_sender:
            path = entity_path(link.remote_source.address)
            if path in self.broker.queues:
                self.pump(self.broker.queues[path])
            if link.drain_mode:
                link.drained()

    def pump(self, queue: Queue) -> None:
        """Hands ready messages to the queue's receivers with credit, round robin."""
        links = self.consumers.get(queue.name, [])
        while queue.ready:
            ready_links = [link for link in links if link.credit > 0 and link.state & Endpoint.LOCAL_ACTIVE]
            if not ready_links:
                break
            for link in ready_links:
                if not queue.ready:
                    break
                presettled = link.snd_settle_mode == Link.SND_SETTLED  # receive-and-delete
                taken = self.broker.take(queue, peek_lock=not presettled)
                if taken is None:
                    break
                token, payload = taken
                delivery = link.delivery(token)
                link.send(payload)
                link.advance()
                if presettled:
                    delivery.settle()

    @_guarded
    def on_delivery(self, event: Any) -> None:
        delivery = event.delivery
        link = event.link
        if link.is_receiver:
            self._incoming(link, delivery)
        else:
            self._settled_by_client(delivery)

    def _incoming(self, link: Any, delivery: Any) -> None:
        if not delivery.readable or delivery.partial:
            return
        raw = bytes(link.recv(delivery.pending))
        link.advance()
        path = entity_path(link.remote_target.address)
        outcome = Delivery.ACCEPTED
        try:
            if path == CBS:
                self._cbs(link.connection, raw)
            elif path.endswith(MANAGEMENT_SUFFIX):
                self._management(link.connection, path[: -len(MANAGEMENT_SUFFIX)], path, raw)
            else:
                self.broker.enqueue_raw(path, raw)
        except codec.CodecError as e:
            delivery.local.condition = Condition("amqp:decode-error", str(e))
            outcome = Delivery.REJECTED
        if not delivery.settled:  # remotely settled (pre-settled send)
            delivery.update(outcome)
        delivery.settle()
        if link.credit < 500:
            link.flow(1000 - link.credit)

    def _settled_by_client(self, delivery: Any) -> None:
        state = delivery.remote_state
        if state not in (Delivery.ACCEPTED, Delivery.MODIFIED, Delivery.REJECTED, Delivery.RELEASED):
            return
        token = _raw_tag(delivery)
        if state == Delivery.ACCEPTED:
            known = self.broker.complete(token)
        elif state == Delivery.RELEASED:
            known = self.broker.abandon(token, counted=False)
        elif state == Delivery.MODIFIED:
            annotations = codec.plain(delivery.remote.annotations or {})
            known = self.broker.abandon(token, annotations=annotations, counted=bool(delivery.remote.failed))
        else:
            condition = delivery.remote.condition
            info = codec.plain(condition.info) if condition is not None and condition.info else {}
            info = {str(k): v for k, v in (info or {}).items()}
            known = self.broker.dead_letter(
                token,
                info.get("DeadLetterReason") or (condition.name if condition else None),
                info.get("DeadLetterErrorDescription") or (condition.description if condition else None),
            )
        if not delivery.settled:  # the client waits for our settled echo (receiver-settle-mode second)
            if known:
                delivery.update(state)  # echo the same outcome, without an error
            else:
                delivery.local.condition = Condition(LOCK_LOST_CONDITION, "The lock supplied is invalid or expired.")
                delivery.update(Delivery.REJECTED)
        delivery.settle()

    # ------------------------------------------------------------------ $cbs and $management
    @staticmethod
    def _reply_link(connection: Any, *, source: str, reply_to: str | None) -> Any:
        fallback = None
        link = connection.link_head(Endpoint.LOCAL_ACTIVE)
        while link is not None:
            if link.is_sender:
                if reply_to and link.remote_target.address == reply_to:
                    return link
                if entity_path(link.remote_source.address) == source:
                    fallback = link
            link = link.next(Endpoint.LOCAL_ACTIVE)
        return fallback

    def _reply(self, link: Any, message: Message) -> None:
        if link is None:
            log.warning("no reply link for %s", message.correlation_id)
            return
        delivery = link.send(message)
        if isinstance(delivery, Delivery):
            delivery.settle()

    def _cbs(self, connection: Any, raw: bytes) -> None:
        request = Message()
        request.decode(raw)
        status, description = self._check_token(connection, request)
        reply = Message(
            correlation_id=request.id,
            properties={"status-code": status, "status-description": description},
        )
        self._reply(self._reply_link(connection, source=CBS, reply_to=request.reply_to), reply)

    def _check_token(self, connection: Any, request: Message) -> tuple[int, str]:
        """(202, Accepted) and the entity recorded for the connection, or (401, why) as Service Bus answers."""
        if self.auth is None:
            return 202, "Accepted"  # no identity checks: tokens are accepted as they come (SAS or jwt)
        props = {str(k): v for k, v in (request.properties or {}).items()}
        kind, name = str(props.get("type", "")), str(props.get("name", ""))
        if kind != "jwt":
            self.refused_tokens += 1
            return 401, "Unauthorized: local (SAS) authentication is disabled for this namespace; use Entra ID."
        try:
            self.auth.validate(str(request.body))
        except TokenError as e:
            self.refused_tokens += 1
            log.warning("put-token refused for %s: %s", name, e.reason)
            return 401, f"Unauthorized: {e.reason}"
        self.authorized.setdefault(_endpoint_key(connection), set()).add(entity_path(name))
        return 202, "Accepted"

    def auth_stats(self) -> dict[str, Any]:
        if self.auth is None:
            return {"enforced": False}
        return {
            "enforced": True,
            "acceptedApps": dict(self.auth.accepted),
            "refusedApps": dict(self.auth.refused_apps),
            "refusedTokens": self.refused_tokens,
        }

    def _management(self, connection: Any, entity: str, path: str, raw: bytes) -> None:
        request = Message()
        request.decode(raw)
        props = {str(k): v for k, v in (request.properties or {}).items()}
        body = codec.plain(request.body) or {}
        body = {str(k): v for k, v in body.items()} if isinstance(body, dict) else {}
        operation = str(props.get("operation", ""))
        try:
            status, description, value = self._operation(entity, operation, body)
        except (KeyError, TypeError, ValueError, codec.CodecError) as e:
            status, description, value = 400, f"bad request: {e}", None
        properties: dict[str, Any] = {"statusCode": status, "statusDescription": description}
        if status == 410:
            properties["errorCondition"] = symbol(LOCK_LOST_CONDITION)
        reply = Message(correlation_id=request.id, properties=properties, body=value)
        self._reply(self._reply_link(connection, source=path, reply_to=request.reply_to), reply)

    def _operation(self, entity: str, operation: str, body: dict[str, Any]) -> tuple[int, str, Any]:
        queue = self.broker.queue(entity)
        if operation == "com.microsoft:renew-lock":
            expirations = []
            for token in body["lock-tokens"]:
                until = self.broker.renew(_tag(token))
                if until is None:
                    return 410, "The lock supplied is invalid or expired.", None
                expirations.append(timestamp(int(until * 1000)))
            return 200, "OK", {"expirations": expirations}
        if operation == "com.microsoft:peek-message":
            encoded = self.broker.peek(queue, int(body.get("from-sequence-number", 0)), int(body["message-count"]))
            if not encoded:
                return 204, "No messages", None
            return 200, "OK", {"messages": [{"message": raw} for raw in encoded]}
        if operation == "com.microsoft:schedule-message":
            seqs = [self.broker.enqueue(queue, bytes(item["message"])) for item in body["messages"]]
            self.pump(queue)
            return 200, "OK", {"sequence-numbers": [s if s is not None else -1 for s in seqs]}
        if operation == "com.microsoft:cancel-scheduled-message":
            cancel = {int(s) for s in body["sequence-numbers"]}
            queue.scheduled = [entry for entry in queue.scheduled if entry[1] not in cancel]
            heapq.heapify(queue.scheduled)
            return 200, "OK", None
        if operation == "com.microsoft:update-disposition":
            status = str(body["disposition-status"])
            ok = True
            for token in body["lock-tokens"]:
                tag = _tag(token)
                if status == "completed":
                    ok = self.broker.complete(tag) and ok
                elif status == "abandoned":
                    ok = self.broker.abandon(tag) and ok
                elif status == "suspended":
                    ok = (
                        self.broker.dead_letter(tag, body.get("deadletter-reason"), body.get("deadletter-description"))
                        and ok
                    )
                else:
                    return 501, f"disposition {status} is not supported locally", None
            return (200, "OK", None) if ok else (410, "The lock supplied is invalid or expired.", None)
        return 501, f"operation {operation} is not supported by the local peer", None

    # ------------------------------------------------------------------ timer and control calls
    def on_timer_task(self, event: Any) -> None:
        try:
            self.broker.tick()
            while True:
                try:
                    call, future = self.calls.get_nowait()
                except thread_queue.Empty:
                    break
                try:
                    future.set_result(call())
                except Exception as e:  # reported to the HTTP caller
                    future.set_exception(e)
        except Exception:
            log.exception("tick failed")
        event.container.schedule(TICK_SECONDS, self)

    def call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Runs ``fn`` on the reactor thread (the broker is single-threaded) and returns its result."""
        future: Future[Any] = Future()
        self.calls.put((fn, future))
        return future.result(timeout)


def _raw_tag(delivery: Any) -> bytes:
    """The delivery tag as bytes (proton's ``Delivery.tag`` decodes it as UTF-8, which a uuid isn't)."""
    raw = cproton.lib.pn_delivery_tag(delivery._impl)
    return bytes(cproton.ffi.unpack(raw.start, raw.size))


def _tag(token: Any) -> bytes:
    """A lock token from a management request (AMQP uuid) -> our delivery tag (the SDK reads the tag
    little-endian: ``uuid.UUID(bytes_le=tag)``)."""
    if isinstance(token, uuid.UUID):
        return token.bytes_le
    if isinstance(token, (bytes, bytearray)) and len(token) == 16:
        return uuid.UUID(bytes=bytes(token)).bytes_le
    return uuid.UUID(str(token)).bytes_le


def start_control_server(peer: Peer, port: int) -> ThreadingHTTPServer:
    """`GET /queues` -> counts per queue (incl. dead-letter, open receivers); `GET /auth` -> whose tokens were accepted;
    `POST /reset` -> purge everything."""

    class ControlHandler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/queues":
                self._send(200, peer.call(peer.queue_stats))
            elif self.path.rstrip("/") == "/auth":
                self._send(200, peer.call(peer.auth_stats))
            elif self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path.rstrip("/") == "/reset":
                peer.call(peer.broker.purge)
                self._send(200, {"reset": True})
            else:
                self._send(404, {"error": "not found"})

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), ControlHandler)
    threading.Thread(target=server.serve_forever, name="amqp-peer-control", daemon=True).start()
    return server


def serve(
    *,
    port: int,
    queues: list[str] | None = None,
    max_delivery_count: int = 10,
    lock_duration: float = 30.0,
    duplicate_window: float = 600.0,
    control_port: int | None = None,
    ready: Callable[[], None] | None = None,
    auth: TokenValidator | None = None,
) -> None:
    broker = Broker(
        max_delivery_count=max_delivery_count, lock_duration=lock_duration, duplicate_window=duplicate_window
    )
    peer = Peer(broker, auth)
    for name in queues or []:
        broker.queue(name)
    container = Container(peer)
    peer.container = container
    container.listen(f"127.0.0.1:{port}")
    container.schedule(TICK_SECONDS, peer)
    if control_port is not None:
        start_control_server(peer, control_port)
    if ready is not None:
        ready()
    container.run()
