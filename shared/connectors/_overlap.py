"""PURE: the memory of a timestamp change feed's overlap window, carried in its cursor.

BC's feed reads ``lastModifiedDateTime gt cursor - overlap`` so that a row committed late with an earlier
stamp is not missed; every row already handed over in that window comes back on the next read. The cursor
remembers those rows as a short digest of (id, stamp): a row that comes back with the same stamp is the
version already delivered (and processed: the watermark only moves after the whole read succeeded), so it
is dropped before the engine looks up a coupling for it. A row modified again, or one committed late, has
no digest in the cursor and is delivered as before. The memory is capped (a cursor lives in one table
property): rows beyond it are simply delivered again.

Cursor text: ``<ISO timestamp>`` or ``<ISO timestamp> <digest>,<digest>,...``.
"""

from __future__ import annotations

import base64
import hashlib
from collections import deque
from datetime import datetime, timedelta

MAX_REMEMBERED = 2500  # x 9 characters: well below a table property's 32K characters, with the job detail


def digest(record_id: str, modified_on: datetime) -> str:
    """48 bits of (id, stamp), URL-safe base64 (8 characters): a false match needs one in ~10^11 per row."""
    raw = hashlib.blake2b(f"{record_id}|{modified_on.isoformat()}".encode(), digest_size=6).digest()
    return base64.urlsafe_b64encode(raw).decode()


def split_cursor(cursor: str | None) -> tuple[str | None, frozenset[str]]:
    """(the timestamp part, the digests remembered); a plain timestamp cursor remembers nothing."""
    if not cursor:
        return cursor, frozenset()
    stamp, _, rest = cursor.partition(" ")
    return stamp, frozenset(d for d in rest.split(",") if d)


def join_cursor(stamp: str, remembered: list[str]) -> str:
    return f"{stamp} {','.join(remembered)}" if remembered else stamp


class Window:
    """The rows handed over within ``overlap`` of the newest stamp, fed in ascending stamp order."""

    def __init__(self, overlap: timedelta) -> None:
        self.overlap = overlap
        self.rows: deque[tuple[datetime, str]] = deque()

    def add(self, modified_on: datetime, record_digest: str) -> None:
        self.rows.append((modified_on, record_digest))

    def remembered(self, newest: datetime) -> list[str]:
        """Digests of the rows the next read (``gt newest - overlap``) re-delivers, newest first, capped."""
        start = newest - self.overlap
        out: list[str] = []
        for stamp, d in reversed(self.rows):
            if stamp <= start or len(out) >= MAX_REMEMBERED:
                break
            out.append(d)
        return out

    def trim(self, newest: datetime) -> None:
        """Forgets rows the next read cannot re-deliver (keeps memory flat over a long feed)."""
        start = newest - self.overlap
        while self.rows and self.rows[0][0] <= start:
            self.rows.popleft()
