"""Set up coupling, read couplings, delete coupling (one, many, all)."""

import azure.functions as func

from functions._http import handle_errors, json_response, parse_json_body
from functions._mapping_models import MatchCoupleRequest
from functions._models import (
    CoupleRequest,
    UncoupleRequest,
    accepted,
    continuation_param,
    coupling_json,
    guid_param,
    next_link,
    paged,
    top_param,
)
from shared.bootstrap import get_engine
from shared.domain.model import Direction
from shared.services.coupling_service import CouplingService
from shared.services.jobs import JobService
from shared.services.mapping_admin import admin_for

bp = func.Blueprint()


@bp.route(route="mappings/{mapping}/couplings", methods=["POST"])
@handle_errors
async def couple(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req, CoupleRequest)
    service = CouplingService(await get_engine())
    mapping = req.route_params["mapping"]
    if body.createNew:
        coupling = await service.couple_create_new(
            mapping, bc_id=body.bcId, dv_id=body.dataverseId, replace=body.replace
        )
    else:
        after = (
            "default" if body.syncAfter is None else (None if body.syncAfter == "none" else Direction(body.syncAfter))
        )
        assert body.bcId and body.dataverseId
        coupling = await service.couple_existing(
            mapping, body.bcId, body.dataverseId, replace=body.replace, sync_after=after
        )
    return json_response(coupling_json(coupling), status=201)


@bp.route(route="mappings/{mapping}/couplings/match", methods=["POST"])
@handle_errors
async def match_couple(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req, MatchCoupleRequest)
    engine = await get_engine()
    mapping = await engine.registry.get(req.route_params["mapping"])
    fields = [f.model_dump() for f in body.matchFields] if body.matchFields else None
    if fields:
        await admin_for(engine).check_match_fields(mapping, fields)
    options = {"matchFields": fields, "createNewIfNoMatch": body.createNewIfNoMatch, "syncAfter": body.syncAfter}
    job = await JobService(engine).start(mapping.name, "matchCouple", None, bcIds=body.bcIds, **options)
    return accepted(job.job_id)


@bp.route(route="mappings/{mapping}/couplings/{bcId}", methods=["GET"])
@handle_errors
async def get_coupling(req: func.HttpRequest) -> func.HttpResponse:
    bc_id = guid_param(req.route_params.get("bcId"), "bcId")
    coupling = await CouplingService(await get_engine()).get_by_bc_id(req.route_params["mapping"], bc_id)
    return json_response(coupling_json(coupling))


@bp.route(route="mappings/{mapping}/couplings", methods=["GET"])
@handle_errors
async def list_couplings(req: func.HttpRequest) -> func.HttpResponse:
    service = CouplingService(await get_engine())
    mapping = req.route_params["mapping"]
    if "dataverseId" in req.params:
        dv_id = guid_param(req.params.get("dataverseId"), "dataverseId")
        return json_response({"value": [coupling_json(c) for c in await service.find_by_dataverse_id(mapping, dv_id)]})
    top, cont = top_param(req), continuation_param(req)
    items, token = await service.list_page(mapping, top, cont)
    link = next_link(f"mappings/{mapping}/couplings", top, token)
    return json_response(paged([coupling_json(c) for c in items], link))


@bp.route(route="mappings/{mapping}/couplings/{bcId}", methods=["DELETE"])
@handle_errors
async def delete_coupling(req: func.HttpRequest) -> func.HttpResponse:
    bc_id = guid_param(req.route_params.get("bcId"), "bcId")
    await CouplingService(await get_engine()).uncouple(req.route_params["mapping"], bc_id)
    return func.HttpResponse(status_code=204)


@bp.route(route="mappings/{mapping}/uncouple", methods=["POST"])
@handle_errors
async def uncouple_many(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req, UncoupleRequest)
    results = await CouplingService(await get_engine()).uncouple_many(
        req.route_params["mapping"], bc_ids=body.bcIds or (), dv_ids=body.dataverseIds or ()
    )
    return json_response({"results": results})


@bp.route(route="mappings/{mapping}/couplings", methods=["DELETE"])
@handle_errors
async def delete_all_couplings(req: func.HttpRequest) -> func.HttpResponse:
    engine = await get_engine()
    mapping = await engine.registry.get(req.route_params["mapping"])
    job = await JobService(engine).start(mapping.name, "uncoupleAll", None)
    return accepted(job.job_id)
