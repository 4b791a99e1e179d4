"""The sync errors list (and retry) and the jobs list."""

import azure.functions as func

from functions._http import handle_errors, json_response, parse_json_body
from functions._models import (
    RetryRequest,
    accepted,
    bool_param,
    continuation_param,
    error_json,
    guid_param,
    job_json,
    next_link,
    paged,
    top_param,
)
from shared.bootstrap import get_engine
from shared.services.jobs import JobService

bp = func.Blueprint()


@bp.route(route="errors", methods=["GET"])
@handle_errors
async def list_errors(req: func.HttpRequest) -> func.HttpResponse:
    top, cont, closed = top_param(req), continuation_param(req), bool_param(req, "includeClosed")
    jobs = JobService(await get_engine())
    mapping, items, token = await jobs.errors_page(req.params.get("mapping"), top, cont, closed)
    link = next_link("errors", top, token, mapping=mapping, includeClosed="true" if closed else None)
    return json_response(paged([error_json(e) for e in items], link))


@bp.route(route="errors/retry", methods=["POST"])
@handle_errors
async def retry_errors(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req, RetryRequest)
    jobs = JobService(await get_engine())
    if body.ids is None:
        assert body.mapping is not None
        return accepted((await jobs.retry_all(body.mapping)).job_id)
    started, unknown = await jobs.retry_errors(body.ids)
    return accepted(started[0].job_id, jobIds=[j.job_id for j in started], unknown=unknown)


@bp.route(route="jobs", methods=["GET"])
@handle_errors
async def list_jobs(req: func.HttpRequest) -> func.HttpResponse:
    top, cont = top_param(req), continuation_param(req)
    mapping, items, token = await JobService(await get_engine()).jobs_page(req.params.get("mapping"), top, cont)
    return json_response(paged([job_json(j) for j in items], next_link("jobs", top, token, mapping=mapping)))


@bp.route(route="jobs/{jobId}", methods=["GET"])
@handle_errors
async def get_job(req: func.HttpRequest) -> func.HttpResponse:
    job_id = guid_param(req.route_params.get("jobId"), "jobId")
    return json_response(job_json(await JobService(await get_engine()).get(job_id)))
