"""Loads a function app module and describes its functions from the real `azure-functions` decorators."""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import azure.functions as func
from croniter import croniter

from local.host.routes import RouteTemplate

_SETTING_REF = re.compile(r"%([^%]+)%")


class TriggerKind(StrEnum):
    HTTP = "http"
    TIMER = "timer"
    SERVICE_BUS = "serviceBus"
    OTHER = "other"


def resolve_setting(value: str, env: dict[str, str] | None = None) -> str:
    """Replace `%NAME%` with the app setting NAME (env, else the default of the matching `Settings` field)."""
    source = os.environ if env is None else env

    def lookup(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in source:
            return source[name]
        from shared.config import Settings  # the app's own defaults stand in for unset app settings

        for f in Settings.model_fields.values():
            if f.alias == name and f.default is not None:
                return str(f.default)
        raise LookupError(f"app setting {name!r} is not set")

    return _SETTING_REF.sub(lookup, value)


def parse_ncrontab(expression: str) -> str:
    """Validate a 6-field NCRONTAB expression (`{second} {minute} {hour} {day} {month} {day-of-week}`)."""
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(f"NCRONTAB needs 6 fields (seconds first), got {len(fields)}: {expression!r}")
    if not croniter.is_valid(expression, second_at_beginning=True):
        raise ValueError(f"invalid NCRONTAB expression {expression!r}")
    return expression


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


@dataclass
class FunctionSpec:
    """What the host needs to know about one function."""

    name: str
    kind: TriggerKind
    binding_name: str  # the handler's parameter for the trigger payload (`req`, `timer`, `msg`)
    handler: Callable[..., Any]
    # HTTP
    route: RouteTemplate | None = None
    methods: frozenset[str] = field(default_factory=frozenset)  # empty: every method
    auth_level: str = "function"
    # Timer
    schedule: str | None = None
    run_on_startup: bool = False
    # Service Bus
    queue_name: str | None = None
    connection: str | None = None
    error: str | None = None  # set when the trigger could not be configured (the function is not started)


def describe(function: func.Function, env: dict[str, str] | None = None) -> FunctionSpec:
    trigger = function.get_trigger()
    name = function.get_function_name() or function.get_user_function().__name__
    handler = function.get_user_function()
    binding = getattr(trigger, "name", "req")
    type_name = trigger.get_binding_name() if trigger is not None else ""
    if type_name == "httpTrigger":
        methods = getattr(trigger, "methods", None) or []
        return FunctionSpec(
            name=name,
            kind=TriggerKind.HTTP,
            binding_name=binding,
            handler=handler,
            route=RouteTemplate(getattr(trigger, "route", None) or name),
            methods=frozenset(_enum_value(m).upper() for m in methods),
            auth_level=_enum_value(getattr(trigger, "auth_level", None) or "function").lower(),
        )
    if type_name == "timerTrigger":
        spec = FunctionSpec(
            name=name,
            kind=TriggerKind.TIMER,
            binding_name=binding,
            handler=handler,
            run_on_startup=bool(getattr(trigger, "run_on_startup", False)),
        )
        try:
            spec.schedule = parse_ncrontab(resolve_setting(trigger.schedule, env))
        except (ValueError, LookupError) as exc:
            spec.error = str(exc)
        return spec
    if type_name == "serviceBusTrigger" and hasattr(trigger, "queue_name"):
        spec = FunctionSpec(
            name=name,
            kind=TriggerKind.SERVICE_BUS,
            binding_name=binding,
            handler=handler,
            connection=getattr(trigger, "connection", None),
        )
        try:
            spec.queue_name = resolve_setting(trigger.queue_name, env)
        except LookupError as exc:
            spec.error = str(exc)
        return spec
    return FunctionSpec(name, TriggerKind.OTHER, binding, handler, error=f"unsupported trigger {type_name!r}")


def functions_of(app: func.FunctionApp) -> list[FunctionSpec]:
    """Describe every function of `app`; `app.get_functions()` is called once and cached on the app."""
    if not isinstance(app, func.FunctionApp):
        raise TypeError("expected an azure.functions.FunctionApp")
    # get_functions() may only be called once per app (a second call fails the unique-name check).
    cached = getattr(app, "_local_host_functions", None)
    if cached is None:
        cached = app.get_functions()
        app._local_host_functions = cached  # type: ignore[attr-defined]
    return [describe(f) for f in cached]


def load_functions(module_name: str = "function_app", *, root: Path | None = None) -> list[FunctionSpec]:
    """Import `module_name` and describe the functions of its `app`."""
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module(module_name)
    app = getattr(module, "app", None)
    if not isinstance(app, func.FunctionApp):
        raise TypeError(f"{module_name}.app is not an azure.functions.FunctionApp")
    return functions_of(app)
