"""Field mappings (list, add, patch, delete), user-defined table mappings (create, delete as a job) and
reset to the shipped definition. Every change is checked completely before anything is stored."""

import azure.functions as func

from functions._http import handle_errors, json_response, parse_json_body
from functions._mapping_models import (
    FieldMappingCreate,
    FieldMappingPatch,
    MappingCreate,
    field_view,
    mapping_view,
)
from functions._models import accepted
from shared.bootstrap import get_engine
from shared.services.jobs import JobService
from shared.services.mapping_admin import admin_for

bp = func.Blueprint()


@bp.route(route="mappings", methods=["POST"])
@handle_errors
async def create_mapping(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req, MappingCreate)
    mapping, etag = await admin_for(await get_engine()).create(body.body())
    headers = {"ETag": etag, "Location": f"/api/mappings/{mapping.name}"}
    return json_response(mapping_view(mapping, etag), status=201, headers=headers)


@bp.route(route="mappings/{mapping}", methods=["DELETE"])
@handle_errors
async def delete_mapping(req: func.HttpRequest) -> func.HttpResponse:
    engine = await get_engine()
    mapping = await admin_for(engine).check_deletable(req.route_params["mapping"])
    job = await JobService(engine).start(mapping.name, "deleteMapping", None, deleteMapping=True)
    return accepted(job.job_id)


@bp.route(route="mappings/{mapping}/reset", methods=["POST"])
@handle_errors
async def reset_mapping(req: func.HttpRequest) -> func.HttpResponse:
    admin = admin_for(await get_engine())
    mapping, etag = await admin.reset(req.route_params["mapping"], req.headers.get("If-Match"))
    return json_response(mapping_view(mapping, etag), headers={"ETag": etag})


@bp.route(route="mappings/{mapping}/fields", methods=["GET"])
@handle_errors
async def list_fields(req: func.HttpRequest) -> func.HttpResponse:
    fields = await admin_for(await get_engine()).list_fields(req.route_params["mapping"])
    return json_response({"value": [field_view(f) for f in fields]})


@bp.route(route="mappings/{mapping}/fields", methods=["POST"])
@handle_errors
async def add_field(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req, FieldMappingCreate)
    admin = admin_for(await get_engine())
    field = await admin.add_field(req.route_params["mapping"], body.body(), req.headers.get("If-Match"))
    return json_response(field_view(field), status=201)


@bp.route(route="mappings/{mapping}/fields/{fieldId}", methods=["PATCH"])
@handle_errors
async def patch_field(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req, FieldMappingPatch)
    admin = admin_for(await get_engine())
    field = await admin.patch_field(
        req.route_params["mapping"], req.route_params["fieldId"], body.changes(), req.headers.get("If-Match")
    )
    return json_response(field_view(field))


@bp.route(route="mappings/{mapping}/fields/{fieldId}", methods=["DELETE"])
@handle_errors
async def delete_field(req: func.HttpRequest) -> func.HttpResponse:
    admin = admin_for(await get_engine())
    await admin.delete_field(req.route_params["mapping"], req.route_params["fieldId"], req.headers.get("If-Match"))
    return func.HttpResponse(status_code=204)
