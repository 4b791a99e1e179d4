"""PURE: lookups that cannot be resolved on the way to Business Central.

A Dataverse lookup (a contact's parent account) becomes a BC key (the customer's No.) through the parent
mapping's couplings. A parent that is not coupled has no BC key: writing the record anyway would leave
BC's value unchanged while the coupling's baseline claims BC holds the parent, and the next merge would
then "see" BC clear it and clear Dataverse too. Such a record fails (``parent_not_coupled``, retryable)
and nothing of it is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def unresolved_lookups(
    lookups: Sequence[tuple[str, str]],
    values_by_ref: Mapping[str, Mapping[str, Any]],
    payloads_by_ref: Mapping[str, Mapping[str, Any]],
) -> dict[str, list[str]]:
    """``lookups``: (field key, BC field) of the mapping's lookup fields. Returns, per record whose values
    set a lookup that did not make it into its BC payload, the lookups that failed (``"key=value"``)."""
    out: dict[str, list[str]] = {}
    for ref, values in values_by_ref.items():
        payload = payloads_by_ref.get(ref, {})
        missing = [f"{key}={values[key]}" for key, bc in lookups if values.get(key) and bc not in payload]
        if missing:
            out[ref] = missing
    return out
