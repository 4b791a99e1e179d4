"""`python -m shared.messaging.replay --queue sync-work [--max 100]` -- moves dead-lettered work messages
back onto the queue (after the cause was fixed). Uses the app's Service Bus settings: the namespace with
the MSAL credential in Azure (ServiceBusConnection__fullyQualifiedNamespace), else
SERVICEBUS_CONNECTION_STRING (the local peer by default)."""

from __future__ import annotations

import argparse
import asyncio
import logging

from shared.config import get_settings
from shared.messaging.publisher import client_from_settings
from shared.messaging.receiver import replay_dead_letters


async def _run(queue: str, max_messages: int, max_wait: float) -> int:
    settings = get_settings()
    credential = None
    if settings.servicebus_namespace:
        from shared.identity import get_credential

        credential = get_credential()
    async with client_from_settings(settings, credential) as client:
        return await replay_dead_letters(client, queue, max_messages=max_messages, max_wait_time=max_wait)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.messaging.replay", description=__doc__)
    parser.add_argument("--queue", default=None, help="queue name (default: SERVICEBUS_QUEUE)")
    parser.add_argument("--max", type=int, default=100, dest="max_messages")
    parser.add_argument("--max-wait", type=float, default=5.0, help="seconds to wait for more dead letters")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every link state change at INFO
    queue = args.queue or get_settings().servicebus_queue
    count = asyncio.run(_run(queue, args.max_messages, args.max_wait))
    print(f"replayed {count} message(s) from {queue}/$DeadLetterQueue")


if __name__ == "__main__":
    main()
