"""`GET /api/openapi.json` (function key, like every endpoint the contract does not exempt): the OpenAPI 3.1
description of this API."""

import azure.functions as func

from functions._http import json_response
from functions._openapi import openapi_document

bp = func.Blueprint()


@bp.route(route="openapi.json", methods=["GET"])
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(openapi_document())
