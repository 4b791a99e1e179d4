from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.local.amqp_peer.peer_process import PeerProcess, running_peer


@pytest.fixture(scope="module")
def peer() -> Iterator[PeerProcess]:
    with running_peer() as p:
        yield p
