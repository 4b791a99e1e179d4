"""Plans (what a sync would do) and coupling history (#22). Thin: parse, call one service, map to HTTP."""

from __future__ import annotations

from typing import Literal

import azure.functions as func
from pydantic import Field, StrictBool, model_validator

from functions._http import handle_errors, json_response, parse_json_body
from functions._models import (
    GuidList,
    _Request,
    accepted,
    continuation_param,
    guid_param,
    next_link,
    paged,
    top_param,
)
from shared.bootstrap import get_engine
from shared.domain.model import Direction
from shared.services.history import HistoryService
from shared.services.plans import PlanService

bp = func.Blueprint()


class PlanRequest(_Request):
    """The body of Synchronize now (ids, direction, force), or ``{"kind": "full"|"incremental"}``."""

    bcIds: GuidList | None = None
    dataverseIds: GuidList | None = None
    direction: Direction | None = Field(None, strict=False)
    force: StrictBool = False
    kind: Literal["full", "incremental"] | None = None

    @model_validator(mode="after")
    def _one(self) -> PlanRequest:
        given = [x for x in (self.bcIds, self.dataverseIds, self.kind) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of bcIds, dataverseIds or kind")
        if self.kind is not None and (self.direction is not None or self.force):
            raise ValueError("a mapping-wide plan uses the mapping's direction; direction and force are for ids")
        return self


@bp.route(route="mappings/{mapping}/plan", methods=["POST"])
@handle_errors
async def plan(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req, PlanRequest)
    plans = PlanService(await get_engine())
    if body.kind is not None:
        job = await plans.start_job(req.route_params["mapping"], body.kind)
        return accepted(job.job_id)
    answer = await plans.plan_ids(
        req.route_params["mapping"],
        bc_ids=body.bcIds or (),
        dv_ids=body.dataverseIds or (),
        direction=body.direction,
        force=body.force,
    )
    return json_response(answer)


@bp.route(route="jobs/{jobId}/plan", methods=["GET"])
@handle_errors
async def plan_items(req: func.HttpRequest) -> func.HttpResponse:
    job_id = guid_param(req.route_params.get("jobId"), "jobId")
    top, cont = top_param(req), continuation_param(req)
    job, items, token = await PlanService(await get_engine()).items_page(job_id, top=top, continuation=cont)
    body = paged(items, next_link(f"jobs/{job.job_id}/plan", top, token))
    body["status"] = job.status
    return json_response(body)


@bp.route(route="mappings/{mapping}/couplings/{bcId}/history", methods=["GET"])
@handle_errors
async def history(req: func.HttpRequest) -> func.HttpResponse:
    bc_id = guid_param(req.route_params.get("bcId"), "bcId")
    top, cont = top_param(req), continuation_param(req)
    mapping = req.route_params["mapping"]
    items, token = await HistoryService(await get_engine()).page(mapping, bc_id, top=top, continuation=cont)
    return json_response(paged(items, next_link(f"mappings/{mapping}/couplings/{bc_id}/history", top, token)))
