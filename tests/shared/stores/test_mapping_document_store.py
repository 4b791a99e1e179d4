"""Mapping documents against the fake and Azurite: versions, history, optimistic writes, delete."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import PreconditionFailedError
from shared.mappings.documents import MappingDocument
from shared.stores.mapping_document_store import TableMappingDocumentStore
from shared.stores.tables import TableNames
from tests.fakes import FakeMappingDocumentStore


@pytest.fixture(params=["fake", "azurite"])
def documents(request: pytest.FixtureRequest, table_stores: Any) -> Any:
    if request.param == "fake":
        return FakeMappingDocumentStore()
    prefix = table_stores.couplings._name.removesuffix("Couplings")
    return TableMappingDocumentStore(table_stores.tables, TableNames.with_prefix(prefix).settings)


async def test_versions_history_and_optimistic_writes(documents: Any) -> None:
    assert await documents.get_all() == {} and await documents.get("PAYMENT TERMS") is None
    first = await documents.put(MappingDocument(name="PAYMENT TERMS", settings={"conflictPolicy": "bcWins"}))
    assert first.version == 1 and first.row_etag
    with pytest.raises(PreconditionFailedError):  # a second "first" document loses
        await documents.put(MappingDocument(name="PAYMENT TERMS", settings={"scheduleMinutes": 9}))
    second = first.copy()
    second.field_patches["code~isocurrencycode"] = {"status": "disabled"}
    second = await documents.put(second)
    assert second.version == 2 and second.row_etag != first.row_etag
    with pytest.raises(PreconditionFailedError):  # stale row ETag
        await documents.put(first)
    got = await documents.get("PAYMENT TERMS")
    assert got is not None and got.to_json() == second.to_json() and got.row_etag == second.row_etag
    assert set(await documents.get_all()) == {"PAYMENT TERMS"}  # history rows are not documents in force
    if isinstance(documents, TableMappingDocumentStore):
        old = await documents.get_version("PAYMENT TERMS", 1)
        assert old is not None and old.settings == {"conflictPolicy": "bcWins"} and old.field_patches == {}
    await documents.delete("PAYMENT TERMS", got.row_etag)
    assert await documents.get("PAYMENT TERMS") is None
    await documents.delete("PAYMENT TERMS", None)  # deleting what is gone is fine
