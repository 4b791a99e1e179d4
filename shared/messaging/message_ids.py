"""PURE: Service Bus message ids from parts of a notification, within Service Bus's 128-character limit.

Parts come from outside (an OperationId, a lastModifiedDateTime): a long one must neither break the send
nor make two different notifications share an id. A short id stays readable; a long one keeps a readable
head and ends in a hash of the whole, so duplicate detection still drops exact re-sends.
"""

from __future__ import annotations

import hashlib

MAX_MESSAGE_ID = 128
_HEAD = 60


def bounded_message_id(*parts: object) -> str:
    joined = ":".join(str(p) for p in parts)
    if len(joined) <= MAX_MESSAGE_ID:
        return joined
    return joined[:_HEAD] + "~" + hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()
