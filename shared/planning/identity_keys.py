"""PURE: the keys this service gives the records it creates, and which candidate key a create may use.

A record created from the other side gets a deterministic key (a Dataverse id, a BC No.), so a retried or
concurrent create finds the earlier one instead of duplicating it. A key is derived from ALL of the source
id (Dataverse's sequential GUIDs share long prefixes) and comes in a short sequence (``attempt`` 0, 1, ...):
when the record at a key is coupled to some other record (an old counterpart re-coupled elsewhere, or a
rare hash collision), the next key of the sequence is used, so a create never stalls on a taken key.
"""

from __future__ import annotations

import hashlib
import uuid

# Deterministic Dataverse primary keys for rows this service creates: a retried create can't duplicate.
DV_ID_NAMESPACE = uuid.UUID("6f1d2a8e-3c5b-4f7a-9e0d-1b2c3d4e5f60")
MAX_KEY_ATTEMPTS = 4
BC_NUMBER_PREFIX = "DV"
BC_NUMBER_LENGTH = 20  # BC's No. is Code[20]


def dataverse_id_for(mapping: str, bc_id: str, attempt: int = 0) -> str:
    suffix = f":{attempt}" if attempt else ""
    return str(uuid.uuid5(DV_ID_NAMESPACE, f"{mapping}:{bc_id.lower()}{suffix}"))


def bc_number_for(dataverse_id: str, attempt: int = 0) -> str:
    """A deterministic BC No. for a record created from a Dataverse row: a hash of the whole id."""
    suffix = f":{attempt}" if attempt else ""
    digest = hashlib.sha256(f"{dataverse_id.strip('{}').lower()}{suffix}".encode()).hexdigest().upper()
    return BC_NUMBER_PREFIX + digest[: BC_NUMBER_LENGTH - len(BC_NUMBER_PREFIX)]


def adoptable(source_id: str, owner_of_found: str | None) -> bool:
    """Whether a record found at a created key may be coupled to ``source_id``: nobody holds it, or this
    very source does (a concurrent create of the same record won). Otherwise the next key is used."""
    return owner_of_found is None or owner_of_found == source_id
