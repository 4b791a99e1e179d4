"""`python -m local.amqp_peer --port 5672 [--queues sync-work] [--max-delivery-count 10] [--lock-duration 30]
[--duplicate-window 600] [--control-port N] [--jwks-url URL --app-id ID]` -- the local AMQP 1.0 peer for
azure-servicebus (with `--jwks-url`, only Entra tokens of the `--app-id` identities are accepted)."""

from __future__ import annotations

import argparse
import logging
import sys

from local.amqp_peer.server import serve
from local.simcore import TokenValidator
from shared.config import SERVICEBUS_AUDIENCE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m local.amqp_peer", description=__doc__)
    parser.add_argument("--port", type=int, default=5672)
    parser.add_argument("--queues", nargs="*", default=["sync-work"], help="queues to create up front")
    parser.add_argument("--max-delivery-count", type=int, default=10)
    parser.add_argument("--lock-duration", type=float, default=30.0, help="peek-lock duration, seconds")
    parser.add_argument("--duplicate-window", type=float, default=600.0, help="seconds; 0 turns it off")
    parser.add_argument("--control-port", type=int, default=None, help="HTTP side port: GET /queues, POST /reset")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--jwks-url", default=None, help="check put-token JWTs against this authority's keys")
    parser.add_argument("--ca-file", default=None, help="CA trusted for the JWKS URL")
    parser.add_argument("--audience", default=SERVICEBUS_AUDIENCE)
    parser.add_argument("--app-id", action="append", default=None, help="app ids accepted (the managed identity)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s amqp_peer %(levelname)s %(message)s")

    def ready() -> None:
        print(f"amqp_peer listening on 127.0.0.1:{args.port}", flush=True)

    serve(
        port=args.port,
        queues=[q for q in args.queues if q],
        max_delivery_count=args.max_delivery_count,
        lock_duration=args.lock_duration,
        duplicate_window=args.duplicate_window,
        control_port=args.control_port,
        ready=ready,
        auth=None
        if args.jwks_url is None
        else TokenValidator(
            # The SDK asks for "https://servicebus.azure.net//.default": tokens carry the audience either way.
            audience=[args.audience.rstrip("/"), args.audience.rstrip("/") + "/"],
            jwks_url=args.jwks_url,
            ca_file=args.ca_file,
            app_ids=frozenset(args.app_id) if args.app_id else None,
        ),
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
