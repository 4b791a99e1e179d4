"""Opt-in memory tracing of the local functions host (local tooling only, never in the function app).

``SYNC_LOCAL_MEMTRACE=<file>``: every ``SYNC_LOCAL_MEMTRACE_INTERVAL`` seconds (default 2) a line with the
process's RSS, the traced Python heap (current / peak) and the gc counts goes to ``<file>``. A snapshot
is kept whenever the traced heap reaches a new high; SIGUSR1 writes it (by line, then the largest
tracebacks; ``SYNC_LOCAL_MEMTRACE_FRAMES`` frames each, default 8). ``SYNC_LOCAL_MEMTRACE=rss:<file>``
samples RSS and gc only (no tracemalloc overhead).
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
import tracemalloc
from typing import IO

import psutil


class MemTrace:
    def __init__(self, path: str, *, trace: bool, interval: float, frames: int) -> None:
        self.out: IO[str] = open(path, "a", encoding="utf-8", buffering=1)  # kept open for the process
        self.trace = trace
        self.interval = interval
        self.proc = psutil.Process()
        self.peak_rss = 0
        self.peak_traced = 0
        self.peak: tracemalloc.Snapshot | None = None
        self.started = time.monotonic()
        self._wanted = threading.Event()
        if trace:
            tracemalloc.start(frames)

    def line(self) -> str:
        rss = self.proc.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)
        traced = ""
        if self.trace:
            current, peak = tracemalloc.get_traced_memory()
            traced = f" traced={current / 2**20:.1f}MB tracedPeak={peak / 2**20:.1f}MB"
            if current > self.peak_traced * 1.05:  # a new high: what the heap holds then is what to look at
                self.peak_traced = current
                self.peak = tracemalloc.take_snapshot()
        return (
            f"t={time.monotonic() - self.started:.1f}s rss={rss / 2**20:.1f}MB peakRss={self.peak_rss / 2**20:.1f}MB"
            f"{traced} gc={gc.get_count()} objects={len(gc.get_objects())}"
        )

    def loop(self) -> None:
        while True:
            self._wanted.wait(self.interval)
            try:
                self.out.write(self.line() + "\n")
                if self._wanted.is_set():
                    self._wanted.clear()
                    self.dump()
            except Exception as exc:  # a sampler must never take the host down
                self.out.write(f"sample failed: {exc!r}\n")

    def request_dump(self, *_args: object) -> None:
        """SIGUSR1: the sampler thread writes the heap at its traced high (never in the signal handler)."""
        self._wanted.set()

    def dump(self) -> None:
        snap = self.peak
        if snap is None:
            return
        self.out.write(f"--- the heap at its traced high ({self.peak_traced / 2**20:.1f} MB), by line\n")
        for stat in snap.statistics("lineno")[:30]:
            self.out.write(f"{stat}\n")
        self.out.write("--- largest tracebacks\n")
        for stat in snap.statistics("traceback")[:8]:
            self.out.write(f"{stat.size / 2**20:.1f} MB in {stat.count} blocks\n")
            for frame in stat.traceback.format():
                self.out.write(f"    {frame}\n")


def install_from_env() -> MemTrace | None:
    spec = os.environ.get("SYNC_LOCAL_MEMTRACE", "")
    if not spec:
        return None
    trace = not spec.startswith("rss:")
    path = spec.removeprefix("rss:")
    tracer = MemTrace(
        path,
        trace=trace,
        interval=float(os.environ.get("SYNC_LOCAL_MEMTRACE_INTERVAL", "2")),
        frames=int(os.environ.get("SYNC_LOCAL_MEMTRACE_FRAMES", "8")),
    )
    threading.Thread(target=tracer.loop, name="memtrace", daemon=True).start()
    signal.signal(signal.SIGUSR1, tracer.request_dump)
    return tracer
