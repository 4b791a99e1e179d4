"""The console's page and assets (#22): served without a key, locked down, and the key handled only in
session storage with every call going to the public API."""

from __future__ import annotations

import re
from pathlib import Path

import azure.functions as func

from functions.console import console, console_asset

JS = (Path(__file__).parents[3] / "functions" / "console" / "console.js").read_text()


def _req(asset: str | None = None) -> func.HttpRequest:
    route = {"asset": asset} if asset is not None else {}
    return func.HttpRequest("GET", "http://h/api/console", body=b"", route_params=route)


async def test_page_and_assets_are_served_with_a_strict_policy() -> None:
    page = await console(_req())
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_body().decode()
    assert '<label for="key">Function key</label>' in html and 'type="password"' in html
    for title in ("Integration Table Mappings", "Integration Field Mappings", "Coupled Data Synchronization Errors",
                  "Integration Synchronization Jobs", "Couplings"):  # fmt: skip
        assert title in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<script>" not in html  # no inline script: the policy forbids it
    js = await console_asset(_req("console.js"))
    assert js.status_code == 200 and js.mimetype == "text/javascript"
    assert (await console_asset(_req("../function_app.py"))).status_code == 404


def test_key_lives_in_session_storage_and_calls_use_the_api() -> None:
    assert "sessionStorage" in JS and "localStorage" not in JS and "document.cookie" not in JS
    assert "innerHTML" not in JS  # data is shown as text only
    assert re.search(r'"x-functions-key": key', JS)
    assert len(re.findall(r"\bfetch\(", JS)) == 1  # one place calls the API (its base is the page's /api/)
