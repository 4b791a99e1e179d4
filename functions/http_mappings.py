"""Table mappings: list, get, and PATCH the run-time settings (direction, syncOnlyCoupled, state)."""

import azure.functions as func

from functions._http import handle_errors, json_response, parse_json_body
from functions._models import MappingPatch, mapping_json
from shared.bootstrap import get_engine

bp = func.Blueprint()


@bp.route(route="mappings", methods=["GET"])
@handle_errors
async def list_mappings(req: func.HttpRequest) -> func.HttpResponse:
    engine = await get_engine()
    return json_response({"value": [mapping_json(m) for m in await engine.registry.list()]})


@bp.route(route="mappings/{mapping}", methods=["GET"])
@handle_errors
async def get_mapping(req: func.HttpRequest) -> func.HttpResponse:
    engine = await get_engine()
    return json_response(mapping_json(await engine.registry.get(req.route_params["mapping"])))


@bp.route(route="mappings/{mapping}", methods=["PATCH"])
@handle_errors
async def patch_mapping(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req, MappingPatch)
    engine = await get_engine()
    changes = {"direction": body.direction, "sync_only_coupled": body.syncOnlyCoupled, "state": body.state}
    updated = await engine.registry.update(
        req.route_params["mapping"], **{k: v for k, v in changes.items() if v is not None}
    )
    return json_response(mapping_json(updated))
