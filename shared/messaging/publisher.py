"""``ServiceBusPublisher``: the ``shared.ports.MessagePublisher`` on azure-servicebus (async).

One client and one sender per process, opened on first use and kept (opening one costs ~0.5 s and a
connection; see STYLE anti-pattern 1). Messages are packed into ``ServiceBusMessageBatch``es sized by the
link's maximum message size (256 KB on Standard), so no send exceeds the tier's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.servicebus.aio import ServiceBusClient, ServiceBusSender
from azure.servicebus.exceptions import (
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
    ServiceBusError,
)

from shared.config import Settings
from shared.errors import ConfigurationError, PermanentError, TransientError, UnauthorizedError
from shared.messaging.messages import to_service_bus_message

log = logging.getLogger(__name__)


def build_client(
    *,
    connection_string: str | None = None,
    fully_qualified_namespace: str | None = None,
    credential: AsyncTokenCredential | None = None,
    use_tls: bool = True,
    **client_options: Any,
) -> ServiceBusClient:
    """A namespace + credential (MSAL: the managed identity) wins over a connection string (SAS, emulator-style).
    ``use_tls=False`` only for the local peer (plain AMQP, ``host:port``)."""
    if fully_qualified_namespace and credential is not None:
        return ServiceBusClient(fully_qualified_namespace, credential, use_tls=use_tls, **client_options)
    if connection_string:
        return ServiceBusClient.from_connection_string(connection_string, **client_options)
    raise ConfigurationError(
        "Service Bus is not configured: set ServiceBusConnection__fullyQualifiedNamespace (with a credential) "
        "or SERVICEBUS_CONNECTION_STRING."
    )


def client_from_settings(
    settings: Settings, credential: AsyncTokenCredential | None = None, **client_options: Any
) -> ServiceBusClient:
    return build_client(
        connection_string=settings.servicebus_connection_string,
        fully_qualified_namespace=settings.servicebus_namespace,
        credential=credential,
        use_tls=settings.servicebus_tls,
        **client_options,
    )


def translate_error(e: Exception) -> Exception:
    """SDK exception -> the adapter taxonomy of ``shared.errors``."""
    if isinstance(e, (ServiceBusAuthenticationError, ServiceBusAuthorizationError)):
        return UnauthorizedError(str(e), service="servicebus")
    if isinstance(e, MessagingEntityNotFoundError):
        return PermanentError(str(e), code="MessagingEntityNotFound", service="servicebus")
    if isinstance(e, MessageSizeExceededError):
        return PermanentError(str(e), code="MessageSizeExceeded", service="servicebus")
    if isinstance(e, ServiceBusError) and not getattr(e, "_retryable", True):
        return PermanentError(str(e), service="servicebus")
    return TransientError(str(e) or type(e).__name__, service="servicebus")


class ServiceBusPublisher:
    def __init__(
        self,
        queue_name: str,
        *,
        connection_string: str | None = None,
        fully_qualified_namespace: str | None = None,
        credential: AsyncTokenCredential | None = None,
        max_batch_bytes: int | None = None,
        use_tls: bool = True,
    ) -> None:
        if not (connection_string or (fully_qualified_namespace and credential is not None)):
            raise ConfigurationError(
                "ServiceBusPublisher needs a connection string or a fully qualified namespace with a credential."
            )
        self.queue_name = queue_name
        self._connection_string = connection_string
        self._namespace = fully_qualified_namespace
        self._credential = credential
        self._use_tls = use_tls
        self._max_batch_bytes = max_batch_bytes  # None: the link's max message size (the tier's limit)
        self._client: ServiceBusClient | None = None
        self._sender: ServiceBusSender | None = None
        self._lock: asyncio.Lock | None = None
        self._send_lock: asyncio.Lock | None = None
        self.send_count = 0  # batches sent (benchmarks: messages per send)
        self.message_count = 0

    @classmethod
    def from_settings(cls, settings: Settings, credential: AsyncTokenCredential | None = None) -> ServiceBusPublisher:
        namespace = settings.servicebus_namespace
        return cls(
            settings.servicebus_queue,
            connection_string=None if namespace else settings.servicebus_connection_string,
            fully_qualified_namespace=namespace,
            credential=credential if namespace else None,
            use_tls=settings.servicebus_tls,
        )

    async def _get_sender(self) -> ServiceBusSender:
        if self._sender is not None:
            return self._sender
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._sender is None:
                client = build_client(
                    connection_string=self._connection_string,
                    fully_qualified_namespace=self._namespace,
                    credential=self._credential,
                    use_tls=self._use_tls,
                )
                sender = client.get_queue_sender(self.queue_name)
                await sender.__aenter__()  # open the link now, once
                self._client, self._sender = client, sender
        return self._sender

    async def open(self) -> None:
        """Opens the link now (a connection, its claims and the sender link: ~0.5 s against the local peer),
        which the first ``publish`` otherwise does."""
        try:
            await self._get_sender()
        except (ServiceBusError, OSError, TimeoutError) as e:
            await self._drop_link()
            raise translate_error(e) from e

    async def publish(self, messages: Sequence[dict[str, Any]]) -> None:
        """Sends the messages in as few batches as fit. Raises ``MessageFormatError`` (permanent) for a
        malformed message before anything is sent, ``TransientError``/``PermanentError`` for send failures."""
        if not messages:
            return
        outgoing = [to_service_bus_message(m) for m in messages]  # validate all first: all or nothing
        if self._send_lock is None:
            self._send_lock = asyncio.Lock()
        # One AMQP link is not safe for concurrent sends (concurrent webhooks broke it): send one at a time.
        # A failed link is dropped and rebuilt once; re-sending is harmless (message ids are deduplicated).
        async with self._send_lock:
            for attempt in (1, 2):
                try:
                    await self._send_all(outgoing)
                    return
                except (ServiceBusError, OSError, TimeoutError) as e:
                    await self._drop_link()
                    error = translate_error(e)
                    if attempt == 2 or not getattr(error, "transient", False):
                        raise error from e

    async def _send_all(self, outgoing: list[Any]) -> None:
        sender = await self._get_sender()
        batch = await sender.create_message_batch(max_size_in_bytes=self._max_batch_bytes)
        for message in outgoing:
            try:
                batch.add_message(message)
                continue
            except MessageSizeExceededError:
                if len(batch) == 0:
                    raise  # alone too big for the tier: permanent
            await self._send(sender, batch)
            batch = await sender.create_message_batch(max_size_in_bytes=self._max_batch_bytes)
            batch.add_message(message)  # fits an empty batch, else raises (permanent)
        if len(batch):
            await self._send(sender, batch)

    async def _drop_link(self) -> None:
        sender, client = self._sender, self._client
        self._sender = self._client = None
        for closable in (sender, client):
            if closable is not None:
                with contextlib.suppress(Exception):
                    await closable.close()

    async def _send(self, sender: ServiceBusSender, batch: Any) -> None:
        await sender.send_messages(batch)
        self.send_count += 1
        self.message_count += len(batch)

    async def aclose(self) -> None:
        sender, client = self._sender, self._client
        self._sender = self._client = None
        if sender is not None:
            await sender.close()
        if client is not None:
            await client.close()
