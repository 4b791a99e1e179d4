"""Table mappings: list, get (with ETag), and PATCH any run-time setting (If-Match -> 412 when stale)."""

import azure.functions as func

from functions._http import handle_errors, json_response, parse_json_body
from functions._mapping_models import MappingSettingsPatch, mapping_view
from shared.bootstrap import get_engine
from shared.services.mapping_admin import admin_for

bp = func.Blueprint()


@bp.route(route="mappings", methods=["GET"])
@handle_errors
async def list_mappings(req: func.HttpRequest) -> func.HttpResponse:
    engine = await get_engine()
    docs = {m.name: await engine.registry.document(m.name) for m in await engine.registry.list()}
    views = [mapping_view(m, engine.registry.etag(m.name, docs[m.name])) for m in await engine.registry.list()]
    return json_response({"value": views})


@bp.route(route="mappings/{mapping}", methods=["GET"])
@handle_errors
async def get_mapping(req: func.HttpRequest) -> func.HttpResponse:
    mapping, etag = await admin_for(await get_engine()).view(req.route_params["mapping"])
    return json_response(mapping_view(mapping, etag), headers={"ETag": etag})


@bp.route(route="mappings/{mapping}", methods=["PATCH"])
@handle_errors
async def patch_mapping(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req, MappingSettingsPatch)
    admin = admin_for(await get_engine())
    mapping, etag = await admin.patch_settings(req.route_params["mapping"], body.changes(), req.headers.get("If-Match"))
    return json_response(mapping_view(mapping, etag), headers={"ETag": etag})
