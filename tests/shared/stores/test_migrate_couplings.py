"""The migration job's command line on Azurite: moves an old-layout mapping, then finds nothing left."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from shared.domain.model import Coupling
from shared.stores import Stores, TableCouplingStore
from shared.stores.coupling_store import to_index_entity, to_state_entity
from shared.stores.migrate_couplings import main
from shared.stores.tables import escape_key


async def test_the_job_moves_old_layout_rows_and_is_idempotent(
    table_stores: Stores,
    azurite_connection_string: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = await table_stores.tables.get(table_stores.couplings._name)
    c = Coupling("CUSTOMER", str(uuid.uuid4()), str(uuid.uuid4()), datetime.now(UTC))
    for entity in (to_state_entity(c), to_index_entity(c)):
        await table.create_entity(entity | {"PartitionKey": escape_key("CUSTOMER")})
    monkeypatch.setenv("TABLES_CONNECTION_STRING", azurite_connection_string)
    monkeypatch.setenv("SYNC_TABLE_PREFIX", table_stores.couplings._name.removesuffix("Couplings"))
    await asyncio.to_thread(main, [])
    await asyncio.to_thread(main, ["--mapping", "CUSTOMER"])
    out = capsys.readouterr().out
    assert "CUSTOMER: 2 rows moved to buckets" in out and "CUSTOMER: 0 rows moved" in out
    fresh = TableCouplingStore(table_stores.tables, table_stores.couplings._name)
    assert (await fresh.get_by_dataverse_id("CUSTOMER", c.dataverse_id)).bc_id == c.bc_id  # type: ignore[union-attr]
