"""Synchronize now, synchronize from Dataverse, and start a mapping-wide job."""

import azure.functions as func

from functions._http import handle_errors, json_response, parse_json_body
from functions._models import JobRequest, SyncRequest, accepted, parse_json_object
from shared.bootstrap import get_engine
from shared.services import synchronize_now
from shared.services.jobs import JobService

bp = func.Blueprint()


@bp.route(route="mappings/{mapping}/sync", methods=["POST"])
@handle_errors
async def sync_now(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req, SyncRequest)
    result = await synchronize_now.sync_now(
        await get_engine(),
        req.route_params["mapping"],
        bc_ids=body.bcIds or (),
        dv_ids=body.dataverseIds or (),
        direction=body.direction,
        force=body.force,
    )
    return accepted(result.job.job_id) if result.queued else json_response(result.answer())


@bp.route(route="dataverse/sync", methods=["POST"])
@handle_errors
async def sync_from_dataverse(req: func.HttpRequest) -> func.HttpResponse:
    result = await synchronize_now.sync_from_dataverse(await get_engine(), parse_json_object(req))
    return json_response(result.answer(), status=201 if result.created else 200)


@bp.route(route="mappings/{mapping}/jobs", methods=["POST"])
@handle_errors
async def start_job(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req, JobRequest)
    engine = await get_engine()
    mapping = await engine.registry.get(req.route_params["mapping"])
    # Started by a person: the mappings it depends on are brought up to date first (the timer starts them as
    # their own jobs, parents first).
    job = await JobService(engine).start(
        mapping.name, body.kind, mapping.direction.value, full=body.kind == "full", parentsFirst=True
    )
    return accepted(job.job_id)
