"""OpenAPI entries of the mapping resources (merged into ``functions._openapi``'s document)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from functions._mapping_models import (
    REQUEST_MODELS,
    FieldMappingCreate,
    FieldMappingPatch,
    MappingCreate,
    MappingSettingsPatch,
    MatchCoupleRequest,
)


def add_mapping_paths(paths: dict[str, dict[str, Any]], schemas: dict[str, Any], op: Callable[..., Any]) -> None:
    m = ["mapping"]
    f = [*m, "fieldId"]
    paths.setdefault("/mappings", {})["post"] = op(
        "Add a user-defined table mapping (custom BC API pages and Dataverse tables)", "201", body=MappingCreate
    )
    mapping = paths.setdefault("/mappings/{mapping}", {})
    mapping["patch"] = op(
        "Change table mapping settings (If-Match: 412 precondition_failed when stale)",
        "200",
        body=MappingSettingsPatch,
        params=m,
    )
    mapping["delete"] = op("Delete a user-defined mapping and its couplings (job)", "202", params=m, accepted=True)
    paths["/mappings/{mapping}/reset"] = {
        "post": op("Reset to the shipped settings and field mappings", "200", params=m)
    }
    paths["/mappings/{mapping}/fields"] = {
        "get": op("List field mappings", "200", params=m),
        "post": op(
            "Add a user-defined field mapping (checked against both sides' metadata)",
            "201",
            body=FieldMappingCreate,
            params=m,
        ),
    }
    paths["/mappings/{mapping}/fields/{fieldId}"] = {
        "patch": op("Change a field mapping", "200", body=FieldMappingPatch, params=f),
        "delete": op("Delete a user-defined field mapping (shipped ones: 409 not_user_defined)", "204", params=f),
    }
    paths.setdefault("/mappings/{mapping}/couplings/match", {})["post"] = op(
        "Couple by match criteria with BC's rules (job)", "202", body=MatchCoupleRequest, params=m, accepted=True
    )
    for model in REQUEST_MODELS:
        schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in (schemas[model.__name__].pop("$defs", None) or {}).items():
            schemas.setdefault(name, sub)
