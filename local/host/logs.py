"""Console logging in the Functions host's shape: `[2026-11-26T01:02:03.456Z] <message>`."""

from __future__ import annotations

import datetime as dt
import logging
import sys


class HostFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        text = f"[{stamp}] {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(level: int = logging.INFO) -> None:
    """Send every log record (host and function code) to stderr in the host's format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(HostFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "azure", "uamqp", "msal", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
