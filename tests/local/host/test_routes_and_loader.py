"""Route templates, NCRONTAB parsing, app-setting resolution and binding introspection."""

from __future__ import annotations

import datetime as dt

import pytest
from croniter import croniter

from local.host import RouteTemplate, RouteTemplateError, TriggerKind, load_functions, parse_ncrontab, resolve_setting


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("health", "health", {}),
        ("health", "HEALTH", {}),
        ("health", "health/", {}),
        ("mappings/{mapping}", "mappings/CUSTOMER", {"mapping": "CUSTOMER"}),
        ("mappings/{mapping}/couplings/{bcId:guid}", "mappings/M/couplings/x", None),
        ("a/{n:int}", "a/12", {"n": "12"}),
        ("a/{n:int}", "a/1x", None),
        ("a/{n:range(1,5)}", "a/6", None),
        ("a/{n:range(1,5)}", "a/5", {"n": "5"}),
        ("a/{s:minlength(3):alpha}", "a/ab", None),
        ("a/{s:minlength(3):alpha}", "a/abc", {"s": "abc"}),
        ("a/{s:regex(^x\\d+$)}", "a/x12", {"s": "x12"}),
        ("a/{s:regex(^x\\d+$)}", "a/y12", None),
        ("a/{x?}", "a", {}),
        ("a/{x=dflt}", "a", {"x": "dflt"}),
        ("a/{*rest}", "a", {}),
        ("a/{**rest}", "a/b/c", {"rest": "b/c"}),
        ("f/{name}.{ext}", "f/report.pdf", {"name": "report", "ext": "pdf"}),
        ("a/{b}", "a/b/c", None),
        ("a/{b:bool}", "a/True", {"b": "True"}),
    ],
)
def test_route_template_matching(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert RouteTemplate(template).match(path) == expected


def test_route_guid_constraint() -> None:
    route = RouteTemplate("x/{id:guid}")
    assert route.match("x/3f2504e0-4f89-11d3-9a0c-0305e82c3301") == {"id": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"}
    assert route.match("x/3f2504e0") is None


def test_route_precedence_prefers_literals_then_constraints() -> None:
    literal, constrained, free, catch_all = (
        RouteTemplate(t) for t in ("a/special", "a/{id:int}", "a/{id}", "a/{*rest}")
    )
    assert literal.precedence < constrained.precedence < free.precedence < catch_all.precedence


@pytest.mark.parametrize("template", ["a/{x?}/b", "a/{*r}/b", "a/{x:nonsense}", "a/{x}/{x}", "a/{1x}"])
def test_bad_route_templates_are_rejected(template: str) -> None:
    with pytest.raises(RouteTemplateError):
        RouteTemplate(template)


def test_ncrontab_six_fields_seconds_first() -> None:
    expr = parse_ncrontab("*/15 * * * * *")
    start = dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=dt.UTC)
    itr = croniter(expr, start, second_at_beginning=True)
    assert itr.get_next(dt.datetime) == dt.datetime(2026, 1, 1, 0, 0, 15, tzinfo=dt.UTC)
    assert itr.get_next(dt.datetime) == dt.datetime(2026, 1, 1, 0, 0, 30, tzinfo=dt.UTC)
    # "0 */5 * * * *" is every five minutes at second 0 (NCRONTAB), not every five seconds.
    itr = croniter(parse_ncrontab("0 */5 * * * *"), start, second_at_beginning=True)
    assert itr.get_next(dt.datetime) == dt.datetime(2026, 1, 1, 0, 5, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("expr", ["* * * * *", "0 0 * * * * *", "61 * * * * *", "nonsense"])
def test_ncrontab_rejects_other_shapes(expr: str) -> None:
    with pytest.raises(ValueError):
        parse_ncrontab(expr)


def test_resolve_setting_from_env_then_settings_defaults() -> None:
    assert resolve_setting("%Q%-x", {"Q": "work"}) == "work-x"
    assert resolve_setting("%SERVICEBUS_QUEUE%", {}) == "sync-work"  # shared.config default
    assert resolve_setting("literal", {}) == "literal"
    with pytest.raises(LookupError):
        resolve_setting("%NOT_A_SETTING_ANYWHERE%", {})


def test_load_functions_introspects_bindings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", "*/5 * * * * *")
    monkeypatch.setenv("SAMPLE_QUEUE", "sample-q")
    specs = {s.name: s for s in load_functions("tests.local.host.sample_app")}
    # A second load reuses the cached get_functions() result (a second get_functions() call would raise).
    assert {s.name for s in load_functions("tests.local.host.sample_app")} == set(specs)
    item = specs["item"]
    assert item.kind is TriggerKind.HTTP and item.binding_name == "req"
    assert item.methods == {"GET", "PUT"} and item.auth_level == "function"
    assert specs["names"].auth_level == "anonymous" and specs["admin_only"].auth_level == "admin"
    tick = specs["tick"]
    assert tick.kind is TriggerKind.TIMER and tick.schedule == "*/5 * * * * *" and tick.binding_name == "timer"
    assert specs["yearly"].binding_name == "mytimer"
    work = specs["work"]
    assert work.kind is TriggerKind.SERVICE_BUS and work.queue_name == "sample-q" and work.connection == "SampleBus"
    assert work.binding_name == "msg" and work.error is None


def test_unresolvable_setting_disables_only_that_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAMPLE_QUEUE", raising=False)
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", "bad schedule")
    specs = {s.name: s for s in load_functions("tests.local.host.sample_app")}
    assert specs["work"].error and "SAMPLE_QUEUE" in specs["work"].error
    assert specs["tick"].error
    assert specs["item"].error is None
