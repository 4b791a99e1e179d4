"""The one-off job that moves couplings from one partition per mapping to hash buckets (#23).

    python -m shared.stores.migrate_couplings [--mapping CUSTOMER ...]

Reads the table settings from the environment like the app (``TABLES_CONNECTION_STRING`` or
``TABLES_ENDPOINT``). Without ``--mapping`` it moves every mapping that has rows left in the old layout.
Idempotent and resumable: run it again after a crash. The stores also move a mapping on its first use in a
process, so the job only saves the first requests that wait (docs/storage.md, "Migration").
"""

from __future__ import annotations

import argparse
import asyncio

from shared.config import settings_from_env
from shared.stores import build_stores
from shared.stores.coupling_store import migrate_couplings


async def run(mappings: list[str] | None) -> dict[str, int]:
    stores = build_stores(settings_from_env())
    try:
        return await migrate_couplings(stores.couplings, mappings)
    finally:
        await stores.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mapping", action="append", help="only this mapping (repeatable)")
    args = parser.parse_args(argv)
    moved = asyncio.run(run(args.mapping))
    for mapping, rows in moved.items():
        print(f"{mapping}: {rows} rows moved to buckets")
    if not moved:
        print("nothing left in the old layout")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
