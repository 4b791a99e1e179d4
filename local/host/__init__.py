"""The local functions host (Azure Functions Core Tools cannot be installed here): see `server.LocalHost`."""

from local.host.loader import (
    FunctionSpec,
    TriggerKind,
    functions_of,
    load_functions,
    parse_ncrontab,
    resolve_setting,
)
from local.host.queues import InMemoryQueueSource, QueueSource, build_service_bus_message
from local.host.routes import RouteTemplate, RouteTemplateError
from local.host.server import LocalHost, default_queue_source

__all__ = [
    "FunctionSpec",
    "InMemoryQueueSource",
    "LocalHost",
    "QueueSource",
    "RouteTemplate",
    "RouteTemplateError",
    "TriggerKind",
    "build_service_bus_message",
    "default_queue_source",
    "functions_of",
    "load_functions",
    "parse_ncrontab",
    "resolve_setting",
]
