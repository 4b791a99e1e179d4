"""Starts ``python -m local.amqp_peer`` as a subprocess on free ports (shared by the messaging tests)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PeerProcess:
    port: int
    control_port: int
    process: subprocess.Popen[bytes]

    @property
    def connection_string(self) -> str:
        return (
            f"Endpoint=sb://127.0.0.1:{self.port};SharedAccessKeyName=RootManageSharedAccessKey;"
            "SharedAccessKey=local;UseDevelopmentEmulator=true"
        )

    def queues(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control_port}/queues", timeout=5) as r:
            return json.loads(r.read())

    def counts(self, queue: str) -> dict[str, int]:
        return self.queues().get(queue.lower(), {})


@contextmanager
def running_peer(*args: str) -> Iterator[PeerProcess]:
    port, control_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "local.amqp_peer", "--port", str(port), "--control-port", str(control_port), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    out = process.stdout.read().decode() if process.stdout else ""
                    raise RuntimeError(f"amqp peer did not start: {out}") from None
                time.sleep(0.05)
        yield PeerProcess(port, control_port, process)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
