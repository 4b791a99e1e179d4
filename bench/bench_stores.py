"""Micro-benchmark of the coupling store: table operations per record.

    python -m bench.bench_stores [--couplings 10000] [--connection-string CS]

Without a connection string it starts its own in-memory Azurite on a free port. Reports, for N couplings:
couple_many, and a "full sync" pass (load every coupling page by page + save_sync_state of all), as table
operations (HTTP requests) per record; target ≤0.015 for the sync pass.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from shared.config import Settings
from shared.domain.model import Coupling
from shared.stores import build_stores

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
TARGET_SYNC = 0.015


@contextlib.contextmanager
def azurite() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["--tableHost", "127.0.0.1", "--tablePort", str(port), "--inMemoryPersistence", "--disableTelemetry"]
    args += ["--silent", "--skipApiVersionCheck", "--loose"]
    proc = subprocess.Popen([str(ROOT / "node_modules/.bin/azurite-table"), *args], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("Azurite did not start") from None
                time.sleep(0.1)
        yield (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def run(connection_string: str, n: int) -> dict[str, float]:
    settings = Settings(TABLES_CONNECTION_STRING=connection_string, SYNC_TABLE_PREFIX=f"b{uuid.uuid4().hex[:10]}")
    stores = build_stores(settings)
    store, counter = stores.couplings, stores.op_counter
    mapping = "CUSTOMER"
    try:
        await stores.tables.get(store._name)  # table creation is not part of the measurement
        couplings = [
            Coupling(mapping, str(uuid.uuid4()), str(uuid.uuid4()), datetime.now(UTC), bc_values={"name": f"R{i}"})
            for i in range(n)
        ]
        counter.reset()
        t0 = time.perf_counter()
        results = await store.couple_many(couplings)
        couple_s, couple_ops = time.perf_counter() - t0, counter.reset()
        assert all(isinstance(r, Coupling) for r in results)

        # Full sync pass: load all couplings, "sync" them, persist the bookkeeping.
        t0 = time.perf_counter()
        loaded = 0
        async for page in store.iter_all(mapping):
            for c in page:
                c.last_synced_at = datetime.now(UTC)
                c.last_sync_result = "succeeded"
                c.dv_values = dict(c.bc_values)
            await store.save_sync_state(page)
            loaded += len(page)
        sync_s, sync_ops = time.perf_counter() - t0, counter.reset()
        assert loaded == n
    finally:
        await stores.close()
    return {
        "couple_ops": couple_ops,
        "couple_per_record": couple_ops / n,
        "couple_s": couple_s,
        "sync_ops": sync_ops,
        "sync_per_record": sync_ops / n,
        "sync_s": sync_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--couplings", type=int, default=10_000)
    parser.add_argument("--connection-string")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        cs = args.connection_string or stack.enter_context(azurite())
        r = asyncio.run(run(cs, args.couplings))
    n = args.couplings
    print(f"couple_many  {n} couplings: {r['couple_ops']:.0f} table ops = {r['couple_per_record']:.4f}/record"
          f" ({r['couple_s']:.1f} s)")  # fmt: skip
    verdict = "OK" if r["sync_per_record"] <= TARGET_SYNC else "ABOVE TARGET"
    print(f"sync pass    {n} couplings: {r['sync_ops']:.0f} table ops = {r['sync_per_record']:.4f}/record"
          f" ({r['sync_s']:.1f} s) target <= {TARGET_SYNC} {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
