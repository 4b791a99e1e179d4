"""`python -m local.host --port 7071 [--app function_app] [--no-timers]`: serve the function app locally."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from aiohttp import web

from local.host.logs import configure_logging
from local.host.memtrace import install_from_env
from local.host.server import LocalHost

log = logging.getLogger("Host")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m local.host", description=__doc__)
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--app", default="function_app", help="module that defines `app = func.FunctionApp()`")
    parser.add_argument("--no-timers", action="store_true", help="do not run timer triggers on their schedule")
    args = parser.parse_args(argv)

    configure_logging()
    install_from_env()  # SYNC_LOCAL_MEMTRACE=<file>: opt-in RSS/heap sampling (local/host/memtrace.py)
    root = str(Path.cwd())
    if root not in sys.path:
        sys.path.insert(0, root)  # the function app module lives at the project root, as in Azure
    try:
        host = LocalHost.from_module(args.app, run_timers=not args.no_timers)
    except Exception:
        log.exception("Worker failed to index functions from '%s'", args.app)
        raise SystemExit(1) from None
    log.info("Functions host listening on http://%s:%d (pid %d)", args.host, args.port, os.getpid())
    web.run_app(host.create_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
