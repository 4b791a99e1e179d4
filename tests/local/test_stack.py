"""local/stack.py: port conflicts, skipped components, process-group cleanup; and one full-stack health test."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from local.stack import DEFAULT_PORTS, Component, Stack, StackError, free_port, port_in_use, tcp_probe
from tests.conftest import ApiSession


def test_busy_port_gives_a_clear_error_naming_port_and_process(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        stack = Stack(root=tmp_path, ports={"host": port}, only={"host"})
        assert port_in_use(port)
        with pytest.raises(StackError) as info:
            stack.start()
    message = str(info.value)
    assert f"port {port} (host) is already in use" in message
    assert "pytest" in message or "python" in message  # the owning process, found with psutil
    assert stack.started == []


def test_free_ports_stack_uses_other_ports() -> None:
    stack = Stack.on_free_ports()
    assert set(stack.ports) == set(DEFAULT_PORTS)
    assert not set(stack.ports.values()) & set(DEFAULT_PORTS.values())
    env = stack.child_env()
    assert env["BC_BASE_URL"] == f"http://127.0.0.1:{stack.ports['bc_sim']}"
    assert f":{stack.ports['amqp_peer']};" in env["SERVICEBUS_CONNECTION_STRING"]
    assert env["TABLES_ENDPOINT"].startswith(f"https://127.0.0.1:{stack.ports['azurite']}/")
    assert env["SYNC_AUTHORITY_CA"].endswith(".local/ca.pem")


def test_workers_are_host_instances_on_their_own_ports_timers_on_the_first_only() -> None:
    stack = Stack.on_free_ports(workers=3)
    assert list(stack.worker_urls) == ["host", "host-2", "host-3"]
    assert len({stack.ports[n] for n in stack.worker_urls}) == 3
    hosts = {c.name: c for c in stack.components() if c.module == "local.host"}
    assert list(hosts) == ["host", "host-2", "host-3"]
    assert "--no-timers" not in hosts["host"].argv
    assert all("--no-timers" in hosts[n].argv for n in ("host-2", "host-3"))
    assert all(str(hosts[n].port) in hosts[n].argv for n in hosts)
    assert Stack(workers=1).worker_urls == {"host": "http://127.0.0.1:7071"}
    azurite = next(c for c in stack.components() if c.name == "azurite")
    assert azurite.env["NODE_OPTIONS"].endswith("local/azurite/point_lookups.js")  # indexed point lookups


def test_missing_component_is_skipped_with_a_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stack = Stack(root=tmp_path, ports={"host": free_port()}, only={"host"})
    monkeypatch.setattr(stack, "_available", lambda name: False)
    stack.start()
    assert stack.skipped == {"host": "not written yet"}
    assert stack.started == []


def test_stop_terminates_the_whole_process_group(tmp_path: Path) -> None:
    port = free_port()
    # A server that also spawns a grandchild: both must be gone after stop().
    script = (
        "import socket, subprocess, sys, time;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(60)"
    )
    stack = Stack(root=tmp_path, ports={"host": port}, only={"host"}, readiness_timeout=10)
    stack.log_dir.mkdir(parents=True)
    component = Component("host", [sys.executable, "-c", script], port, tcp_probe(port))
    stack._launch(component, stack.child_env())
    stack._wait_ready(component)
    assert component.process is not None
    parent = psutil.Process(component.process.pid)
    deadline = time.monotonic() + 5
    while not parent.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    family = [parent, *parent.children(recursive=True)]
    assert len(family) == 2
    started = time.monotonic()
    stack.stop()
    assert time.monotonic() - started < 6
    _gone, alive = psutil.wait_procs(family, timeout=3)
    assert alive == []
    assert not port_in_use(port)


def test_component_that_dies_reports_its_log(tmp_path: Path) -> None:
    stack = Stack(root=tmp_path, only={"host"}, readiness_timeout=5)
    stack.log_dir.mkdir(parents=True)
    port = free_port()
    component = Component(
        "host", [sys.executable, "-c", "import sys; print('boom-marker'); sys.exit(3)"], port, tcp_probe(port)
    )
    stack._launch(component, stack.child_env())
    with pytest.raises(StackError) as info:
        stack._wait_ready(component)
    stack.stop()
    assert "exited with code 3" in str(info.value) and "boom-marker" in str(info.value)


def test_status_cli_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "local.stack", "status"], capture_output=True, text=True, timeout=30, check=False
    )
    assert "host" in result.stdout and "azurite" in result.stdout


@pytest.mark.stack
def test_full_stack_health_over_http(api: ApiSession) -> None:
    resp = api.get("/api/health", headers={"x-functions-key": ""})
    assert resp.status_code == 200
    body = resp.json()
    assert set(body["checks"]) == {"tables", "serviceBus", "businessCentral", "dataverse"}
    assert body["status"] in {"ok", "degraded"}
    assert body["checks"]["tables"] == "ok"


@pytest.mark.stack
def test_full_stack_function_routes_need_the_key(api: ApiSession) -> None:
    assert api.get("/api/mappings", headers={"x-functions-key": "wrong"}).status_code == 401
    assert api.get("/api/mappings").status_code == 200
    assert api.get("/api/no-such-route").status_code == 404
