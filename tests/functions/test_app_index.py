"""The function app indexes exactly the expected functions, and the OpenAPI document matches the routes."""

from __future__ import annotations

import re

import azure.functions as func

from functions._openapi import openapi_document

EXPECTED = {
    "health",
    "openapi",
    "list_mappings",
    "get_mapping",
    "patch_mapping",
    "create_mapping",
    "delete_mapping",
    "reset_mapping",
    "list_fields",
    "add_field",
    "patch_field",
    "delete_field",
    "couple",
    "match_couple",
    "get_coupling",
    "list_couplings",
    "delete_coupling",
    "uncouple_many",
    "delete_all_couplings",
    "sync_now",
    "sync_from_dataverse",
    "start_job",
    "list_errors",
    "retry_errors",
    "list_jobs",
    "get_job",
    "webhook_businesscentral",
    "webhook_dataverse",
    "sync_worker",
    "scheduled_sync",
    "plan",  # #22
    "plan_items",
    "history",
    "console",
    "console_asset",
}


def _app_functions() -> list:
    # A fresh FunctionApp each time: get_functions() may be called only once per app.
    import importlib

    import function_app

    return importlib.reload(function_app).app.get_functions()


def test_exact_function_names() -> None:
    assert {f.get_function_name() for f in _app_functions()} == EXPECTED


def test_openapi_paths_and_methods_match_registered_http_routes() -> None:
    registered: set[tuple[str, str]] = set()
    anonymous: set[str] = set()
    for f in _app_functions():
        trigger = f.get_trigger()
        if trigger.get_binding_name() != "httpTrigger":
            continue
        route = "/" + trigger.route
        route = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", route)
        for method in trigger.methods:
            registered.add((route, str(method.value if hasattr(method, "value") else method).lower()))
        if trigger.auth_level == func.AuthLevel.ANONYMOUS:
            anonymous.add(route)
    doc = openapi_document()
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == registered
    open_in_doc = {p for p, ops in doc["paths"].items() if all(op.get("security") == [] for op in ops.values())}
    assert (
        open_in_doc
        == anonymous
        == {
            "/health",
            "/webhooks/businesscentral",
            "/webhooks/dataverse",
            "/console",
            "/console/{asset}",
        }
    )
