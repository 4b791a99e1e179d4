"""Table Storage client CPU in the same run, before and after #23's optimisations, on the bench's own Azurite
(through the real stores' TableServiceClient: auth, TLS, retry and counting as the engine has them):

- transactions: 100-operation entity group transactions (coupling-sized creates, then merges) through the
  lean writer/parser (``shared.stores.table_batch``) and through the SDK's ``submit_transaction``;
- lookups: the coupling store's lookup of random ids in a measured partition — point reads (now) against the
  OR-filter/key-range scan the store used before (re-enacted here with the SDK's query, as it was).
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import UpdateMode

from shared.domain.model import Coupling
from shared.stores import Stores, table_batch
from shared.stores.coupling_store import STATE, from_state_entity, partitions, state_rk
from shared.stores.tables import ENTITIES_READ, prefix_range, quote

M = "BENCH"


def _row() -> dict[str, Any]:
    return {"BcId": str(uuid.uuid4()), "DataverseId": str(uuid.uuid4()), "CoupledAt": datetime.now(UTC),
            "Sync": "{}" * 100, "BcValues": "x" * 300, "BcParts": 1, "DvValues": "y" * 300, "DvParts": 1,
            "Skipped": False}  # fmt: skip


async def transactions(stores: Stores, rounds: int = 10) -> dict[str, Any]:
    table = await stores.tables.get(f"{stores.couplings._name}Tx")
    out: dict[str, Any] = {}
    try:
        for lean in (False, True):
            table_batch.ENABLED = lean
            cpu = 0.0
            for _ in range(rounds):
                pk = uuid.uuid4().hex
                ops = [("create", {"PartitionKey": pk, "RowKey": f"bc:{uuid.uuid4()}", **_row()}) for _ in range(100)]
                t0 = time.process_time()
                await table_batch.submit_transaction(table, ops)
                merges = [("update", {"PartitionKey": pk, "RowKey": o[1]["RowKey"], "Sync": "{}" * 90},
                           {"mode": UpdateMode.MERGE}) for o in ops]  # fmt: skip
                await table_batch.submit_transaction(table, merges)
                cpu += time.process_time() - t0
            out["lean" if lean else "sdk"] = round(cpu * 1000 / (2 * rounds), 2)
    finally:
        table_batch.ENABLED = True
    out["unit"] = "client CPU ms per 100-operation transaction"
    out["sdkOverLean"] = round(out["sdk"] / out["lean"], 1) if out["lean"] else None
    return out


async def lookups(stores: Stores, couplings: int, ids: int) -> dict[str, Any]:
    """``ids`` random BC ids among ``couplings`` (a measured partition): the store's point reads against the
    pre-#23 key-range scan over ``[min id, max id]`` decoded by the SDK."""
    store = stores.couplings
    batch = [Coupling(mapping=M, bc_id=str(uuid.uuid4()), dataverse_id=str(uuid.uuid4()),
                      coupled_at=datetime.now(UTC), bc_values={"n": "x" * 40}) for _ in range(couplings)]  # fmt: skip
    for start in range(0, couplings, 2000):
        await store.couple_many(batch[start : start + 2000])
    _ = [p async for p in store.iter_all(M)]  # measures the partition, as a process does after a full sync
    pick = [c.bc_id for c in random.Random(7).sample(batch, ids)]
    table = await stores.tables.get(store._name)
    out: dict[str, Any] = {"couplings": couplings, "ids": ids}

    stores.op_counter.reset()
    ENTITIES_READ.reset()
    t0 = time.process_time()
    found = await store.get_many_by_bc_ids(M, pick)
    cpu = time.process_time() - t0
    out["now"] = {"cpuMsPerId": round(cpu * 1000 / ids, 3), "entitiesRead": ENTITIES_READ.reset(),
                  "requests": stores.op_counter.reset(), "found": len(found)}  # fmt: skip

    keys = sorted(state_rk(i) for i in pick)
    wanted, kept, read = set(keys), 0, 0
    t0 = time.process_time()
    for pk in partitions(M):  # #23: the rows sit in hash buckets; the old scan, bucket by bucket
        query = (f"PartitionKey eq {quote(pk)} and RowKey ge {quote(keys[0])} and RowKey le {quote(keys[-1])}"
                 f" and {prefix_range(STATE)}")  # fmt: skip
        async for page in table.query_entities(query, results_per_page=1000).by_page():
            async for row in page:
                read += 1
                if row["RowKey"] in wanted:
                    from_state_entity(M, row)
                    kept += 1
    out["before"] = {"cpuMsPerId": round((time.process_time() - t0) * 1000 / ids, 3), "entitiesRead": read,
                     "requests": stores.op_counter.reset(), "found": kept}  # fmt: skip
    return out
