"""Pure rules of the change-feed pipeline in ``shared.services.jobs``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.domain.model import Coupling, RemoteRecord, Side
from shared.services.jobs import _newer

T = datetime(2026, 12, 2, 10, 0, 1, tzinfo=UTC)
LATER = datetime(2026, 12, 2, 10, 0, 2, tzinfo=UTC)
EARLIER = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


def _coupling(seen: datetime | None) -> Coupling:
    return Coupling("CUSTOMER", "b", "d", coupled_at=EARLIER, bc_modified_on=seen, dv_modified_on=seen)


@pytest.mark.parametrize(
    ("side", "stamp", "seen", "expected"),
    [
        (Side.DATAVERSE, T, T, True),  # whole seconds: an edit in the second of our write is a candidate
        (Side.DATAVERSE, LATER, T, True),
        (Side.DATAVERSE, EARLIER, T, False),
        (Side.BC, T, T, False),  # BC stamps milliseconds: equal means the write we saw
        (Side.BC, LATER, T, True),
        (Side.BC, T, None, True),
        (Side.DATAVERSE, None, T, True),
    ],
)
def test_newer_treats_an_equal_dataverse_stamp_as_possibly_new(
    side: Side, stamp: datetime | None, seen: datetime | None, expected: bool
) -> None:
    record = RemoteRecord(id="x", fields={}, etag=None, modified_on=stamp)
    assert _newer(record, _coupling(seen), side) is expected
