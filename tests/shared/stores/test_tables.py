"""Table plumbing: key escaping, transaction chunking, error mapping, and operation counts on Azurite."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.domain.model import Coupling
from shared.errors import (
    ConflictError,
    NotFoundError,
    PreconditionFailedError,
    ThrottledError,
    TransientError,
)
from shared.stores import Stores
from shared.stores.coupling_store import BUCKETS
from shared.stores.tables import (
    ENTITIES_READ,
    decode_token,
    encode_token,
    escape_key,
    group_chunks,
    map_error,
    unescape_key,
)
from shared.urlquote import quote_fast

M = "CUSTOMER"


@pytest.mark.parametrize(
    "value",
    ["PartitionKey eq 'CUSTOMER%|a' and (RowKey eq 'bc:x' or RowKey eq 'bc:y')", "".join(map(chr, range(128))),
     "ümlaut/€%2F", "", "a~b-c_d.e"],
)  # fmt: skip
def test_query_parameters_are_quoted_as_urllib_quotes_them(value: str) -> None:
    from urllib.parse import quote

    assert quote_fast(value, safe="") == quote(value, safe="")


@pytest.mark.parametrize(
    "raw",
    ["plain", "a/b", "back\\slash", "hash#q?", "100%", "%2F literal", "tab\tnew\nline\x00\x7f\x85", "ümlaut-€", ""],
)
def test_key_escaping_round_trip(raw: str) -> None:
    escaped = escape_key(raw)
    assert not any(ch in escaped for ch in "/\\#?") and all(ord(ch) >= 0x20 for ch in escaped)
    assert not any(0x7F <= ord(ch) <= 0x9F for ch in escaped)
    assert unescape_key(escaped) == raw


def test_escaping_is_injective() -> None:
    assert escape_key("%2F") != escape_key("/")


def test_250_ops_split_into_100_100_50_and_groups_stay_together() -> None:
    ops = [("create", {"PartitionKey": "p", "RowKey": str(i)}) for i in range(250)]
    assert [len(c) for c in group_chunks(ops)] == [100, 100, 50]
    assert sorted(i for c in group_chunks(ops) for i in c) == list(range(250))
    odd = [("create", {"PartitionKey": "p", "RowKey": str(i)}) for i in range(7)]
    groups = [[0, 1], [2, 3, 4], [5, 6]]
    assert group_chunks(odd * 1, groups) == [[0, 1, 2, 3, 4, 5, 6]]
    big = [("create", {"PartitionKey": "p", "RowKey": str(i), "V": "x" * 200_000}) for i in range(40)]
    chunks = group_chunks(big)
    assert len(chunks) > 1 and all(len(c) * 200_000 < 4_000_000 for c in chunks)


def test_continuation_tokens_are_opaque_round_trips() -> None:
    token = encode_token({"PartitionKey": "p", "RowKey": "bc:x"})
    assert "{" not in token and decode_token(token) == {"PartitionKey": "p", "RowKey": "bc:x"}
    with pytest.raises(ValueError):
        decode_token("%%%")


def test_error_mapping() -> None:
    assert isinstance(map_error(ResourceExistsError("x")), ConflictError)
    assert isinstance(map_error(ResourceModifiedError("x")), PreconditionFailedError)
    assert isinstance(map_error(ResourceNotFoundError("x")), NotFoundError)

    class R:
        status_code = 503
        reason = "busy"
        headers: dict = {}

        def text(self) -> str:
            return ""

    e = HttpResponseError("x", response=R())
    assert isinstance(map_error(e), TransientError)
    R.status_code = 429
    assert isinstance(map_error(HttpResponseError("x", response=R())), ThrottledError)


def _cp() -> Coupling:
    return Coupling(mapping=M, bc_id=str(uuid.uuid4()), dataverse_id=str(uuid.uuid4()), coupled_at=datetime.now(UTC))


async def test_operation_counts_on_azurite(table_stores: Stores) -> None:
    store, counter = table_stores.couplings, table_stores.op_counter
    batch = [_cp() for _ in range(1000)]
    await store.couple(_cp())  # creates the table
    counter.reset()
    await store.couple_many(batch)
    # per bucket (~63 couplings each): one transaction of index claims, then one of state rows
    assert counter.reset() == 2 * BUCKETS
    await store.get_by_bc_id(M, batch[0].bc_id)
    assert counter.reset() == 1  # point read
    ENTITIES_READ.reset()
    await store.get_many_by_bc_ids(M, [c.bc_id for c in batch[:28]])
    assert counter.reset() == 28 and ENTITIES_READ.reset() == 28  # point reads: only the rows needed
    found = await store.get_many_by_bc_ids(M, [c.bc_id for c in batch])
    assert len(found) == 1000 and counter.reset() <= BUCKETS + 3  # dense: a key-range scan per bucket
    assert ENTITIES_READ.reset() <= 1001
    pages = [p async for p in store.iter_all(M)]
    assert [len(p) for p in pages] == [1000, 1] and counter.reset() == BUCKETS
    for c in batch:
        c.last_sync_result = "succeeded"
    await store.save_sync_state(batch)
    assert counter.reset() == BUCKETS
    await store.uncouple_many(M, [c.bc_id for c in batch[:50]])
    # 50 state point reads + ≤16 transactions of state deletes + 50 index point reads + ≤16 transactions of
    # index deletes + ≤16 of history archive rows (#22)
    assert counter.reset() <= 100 + 3 * BUCKETS


async def test_build_stores_with_endpoint_and_token_credential() -> None:
    from azure.core.credentials import AccessToken

    from shared.config import Settings
    from shared.stores import build_stores

    class Cred:
        async def get_token(self, *scopes: str, **kw: object) -> AccessToken:
            return AccessToken("t", 2**31)

        async def close(self) -> None:
            return None

    stores = build_stores(Settings(SYNC_TABLE_PREFIX="x1"), credential=Cred())  # type: ignore[arg-type]
    assert stores.couplings._name == "x1Couplings" and stores.jobs._name == "x1Jobs"
    assert stores.tables.service.url.startswith("https://127.0.0.1:10002")
    assert stores.op_counter.count == 0
    await stores.close()
