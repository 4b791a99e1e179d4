"""Webhooks (no function key): Business Central subscriptions and Dataverse service endpoints, authenticated
by ``shared.services.webhook_intake`` (clientState / the webhook key)."""

import azure.functions as func

from functions._http import handle_errors, json_response
from functions._models import parse_json_object
from shared.bootstrap import get_engine
from shared.services import webhook_intake

bp = func.Blueprint()


@bp.route(route="webhooks/businesscentral", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@handle_errors
async def webhook_businesscentral(req: func.HttpRequest) -> func.HttpResponse:
    token = req.params.get("validationToken")
    if token is not None:  # BC's subscription handshake: echo the token as text
        return func.HttpResponse(token[:1024], status_code=200, mimetype="text/plain")
    queued = await webhook_intake.bc_notification(await get_engine(), parse_json_object(req))
    return json_response({"queued": queued}, status=202)


@bp.route(route="webhooks/dataverse", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@handle_errors
async def webhook_dataverse(req: func.HttpRequest) -> func.HttpResponse:
    engine = await get_engine()
    webhook_intake.authenticate_dataverse(req.params.get("code") or req.headers.get("x-functions-key"), engine.settings)
    queued = await webhook_intake.dataverse_notification(engine, parse_json_object(req))
    return json_response({"queued": queued}, status=202)
