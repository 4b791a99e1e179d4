from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.local.amqp_peer.peer_process import PeerProcess, running_peer


@pytest.fixture(scope="module")
def peer() -> Iterator[PeerProcess]:
    """Normal locks (30 s), max delivery count 3."""
    with running_peer("--max-delivery-count", "3") as p:
        yield p


@pytest.fixture(scope="module")
def short_lock_peer() -> Iterator[PeerProcess]:
    """1.5 s locks, for lock-expiry and killed-consumer tests."""
    with running_peer("--lock-duration", "1.5", "--max-delivery-count", "5") as p:
        yield p
