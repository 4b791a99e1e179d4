"""A small function app for the local host's tests (independent of the real `function_app`)."""

from __future__ import annotations

import asyncio
import json
import threading

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

# What the non-HTTP functions saw; the tests read these.
EVENTS: list[tuple[str, object]] = []
QUEUE_ATTEMPTS: dict[str, int] = {}


def _echo(req: func.HttpRequest) -> func.HttpResponse:
    body = {
        "method": req.method,
        "route": dict(req.route_params),
        "params": dict(req.params),
        "body": req.get_body().decode(),
        "thread": threading.current_thread().name,
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="items/{id:guid}", methods=["GET", "PUT"])
def item(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req)


@app.route(route="items/special", methods=["GET"])
def special(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("special")


@app.route(route="names/{name:alpha}/{n:int?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def names(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req)


@app.route(route="files/{*rest}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def files(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req)


@app.route(route="created", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def created(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0)
    return func.HttpResponse(
        json.dumps({"async": True, "body": req.get_json()}),
        status_code=201,
        headers={"Location": "/api/created/1", "X-Extra": "yes"},
        mimetype="application/json",
    )


@app.route(route="text", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def text(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("héllo", mimetype="text/plain", charset="utf-8")


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin")


@app.route(route="boom", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("secret-internal-detail")


@app.route(route="aboom", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def aboom(req: func.HttpRequest) -> func.HttpResponse:
    raise ValueError("secret-internal-detail")


@app.timer_trigger(schedule="%SAMPLE_TIMER_SCHEDULE%", arg_name="timer", run_on_startup=False)
def tick(timer: func.TimerRequest) -> None:
    EVENTS.append(("tick", timer.past_due))


@app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="mytimer")
async def yearly(mytimer: func.TimerRequest) -> None:
    EVENTS.append(("yearly", mytimer.past_due))


@app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer")
def failing_timer(timer: func.TimerRequest) -> None:
    raise RuntimeError("timer failed")


@app.service_bus_queue_trigger(arg_name="msg", queue_name="%SAMPLE_QUEUE%", connection="SampleBus")
async def work(msg: func.ServiceBusMessage) -> None:
    text = msg.get_body().decode()
    QUEUE_ATTEMPTS[text] = QUEUE_ATTEMPTS.get(text, 0) + 1
    if text.startswith("fail"):
        raise RuntimeError("handler failed")
    EVENTS.append(("work", (text, msg.delivery_count, msg.message_id)))
