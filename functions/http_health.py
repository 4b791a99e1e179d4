"""`GET /api/health` (anonymous): reachability of Table Storage, Service Bus, Business Central, Dataverse."""

import azure.functions as func

from functions._http import handle_errors, json_response
from shared.services.health import check_health

bp = func.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@handle_errors
async def health(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(await check_health())
