"""PURE: the body Dataverse sends, to the sync-from-Dataverse call and to the webhook alike: the simple
``{"entityName", "id"}`` body or a plug-in's RemoteExecutionContext, and whether a change is our own echo."""

from __future__ import annotations

import re
from typing import Any

from shared.domain.errors import ValidationFailedError

ECHO_TAG = "bc-sync"  # the shared variable ``tag`` this service's Dataverse writes carry


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def parse_dataverse_request(body: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    """(entity logical name, row id, message name, context) from the simple body or a RemoteExecutionContext."""
    if "PrimaryEntityName" in body or "InputParameters" in body or "MessageName" in body:
        entity = body.get("PrimaryEntityName")
        row_id = body.get("PrimaryEntityId")
        msg = body.get("MessageName") or "Update"
        if not isinstance(entity, str) or not entity:
            raise ValidationFailedError("The execution context has no PrimaryEntityName.")
        if not isinstance(row_id, str) or not _GUID.match(row_id):
            raise ValidationFailedError("The execution context has no valid PrimaryEntityId (a GUID).")
        if not isinstance(msg, str):
            raise ValidationFailedError("MessageName must be a string.")
        shared_vars = body.get("SharedVariables")
        if shared_vars is not None and not (
            isinstance(shared_vars, list) and all(isinstance(v, dict) for v in shared_vars)
        ):
            raise ValidationFailedError("SharedVariables must be a list of {key, value} objects.")
        return entity, row_id.lower(), msg, body
    entity = body.get("entityName")
    row_id = body.get("id")
    if not isinstance(entity, str) or not entity:
        raise ValidationFailedError("entityName is required (a Dataverse table logical name, e.g. 'account').")
    if not isinstance(row_id, str) or not _GUID.match(row_id):
        raise ValidationFailedError("id is required and must be a GUID.")
    return entity, row_id.lower(), "Update", {}


def is_echo(context: dict[str, Any]) -> bool:
    """A change this service made itself: its write carried our tag (shared variable ``tag``)."""
    for var in context.get("SharedVariables") or []:
        if isinstance(var, dict) and var.get("key") == "tag" and var.get("value") == ECHO_TAG:
            return True
    return False
