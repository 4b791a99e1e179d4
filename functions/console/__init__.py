"""The operator console (#22): plain HTML + JS served by the function app, no build step.

The page itself needs no key; every call it makes goes to the public API with the function key the operator
types in, kept in the browser's session storage only (``console.js``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import azure.functions as func

bp = func.Blueprint()
_HERE = Path(__file__).parent
_ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
# Only our own files run; the key never leaves for another origin; the page cannot be framed.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@cache
def _read(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")


@bp.route(route="console", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def console(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(_read("console.html"), mimetype="text/html", charset="utf-8", headers=_HEADERS)


@bp.route(route="console/{asset}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def console_asset(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("asset", "")
    if name not in _ASSETS:
        return func.HttpResponse("Not found", status_code=404, mimetype="text/plain")
    return func.HttpResponse(_read(name), mimetype=_ASSETS[name], charset="utf-8", headers=_HEADERS)
