"""The whole local world as processes: Azurite, token authority, BC and Dataverse simulators, AMQP peer, host.

`python -m local.stack run [--demo-data]` (what `make run` does) starts everything on the contract's ports,
waits until each part answers, optionally seeds demo data, and stops everything it started on Ctrl-C.
`python -m local.stack status` shows which ports answer. Tests use `Stack` directly (tests/conftest.py).

Identities are enforced as in Azure (docs/identity.md): the host calls Table Storage (Azurite behind
`local.tables_proxy`) and Service Bus (the AMQP peer) as the local user-assigned managed identity (the
authority's `/msi/token`, `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`), and BC and Dataverse as the app
registration `local-sync-app` through its federated credential (`SYNC_AUTH_MODE=federated`); each of those
refuses the other identity's tokens. Test tools that seed the simulators sign in as `local-sync-app` with the
contract's secret (`local.authority.local_client_settings`).

Every component runs in its own process group; `stop()` terminates exactly those groups (SIGTERM, then
SIGKILL). Logs go to `.local/logs/<name>.log`. A component whose module is not there yet is skipped with a
warning, so the stack grows as the pieces land.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from shared.config import LOCAL_CLIENT_ID, LOCAL_MANAGED_IDENTITY_CLIENT_ID, LOCAL_TENANT_ID, PROJECT_ROOT

DEFAULT_PORTS: dict[str, int] = {
    "azurite": 10002,
    "authority": 7443,
    "bc_sim": 7081,
    "dv_sim": 7082,
    "amqp_peer": 5672,
    "host": 7071,
    "amqp_control": 5680,  # the AMQP peer's HTTP side port (queue counts, whose tokens it accepted)
}
IDENTITY_HEADER = "local-identity-header"  # the authority's default X-IDENTITY-HEADER
# Start order: everything the host talks to first (in parallel), then the host.
_FIRST_WAVE = ("azurite", "authority", "bc_sim", "dv_sim", "amqp_peer")
HOST = "host"  # the first function-host worker; further ones are `host-2`, `host-3`, ... (`Stack(workers=N)`)
DEMO_DATA: dict[str, list[tuple[str, int]]] = {
    # Every default mapping has records: code tables first (units PCS/BOX/HOUR come with each company).
    "bc_sim": [
        ("salespeoplePurchasers", 3),
        ("currencies", 3),
        ("paymentTerms", 3),
        ("shipmentMethods", 2),
        ("customers", 25),
        ("vendors", 5),
        ("contacts", 10),
        ("items", 15),
        ("opportunities", 5),
        ("salesOrders", 6),  # released, with 1..5 lines each (documents: #21)
        ("salesInvoices", 4),  # posted
    ],
    "dv_sim": [("systemusers", 3), ("accounts", 25), ("contacts", 10), ("products", 5), ("opportunities", 3)],
}
_STOP_GRACE_SECONDS = 5.0


class StackError(RuntimeError):
    """The stack could not start (port taken, component died or never became ready)."""


def _say(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


# ----- readiness probes (one attempt each; True when ready) -----
def tcp_probe(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    return probe


def http_probe(url: str, *, ca_file: Path | None = None, expect: int = 200) -> Callable[[], bool]:
    def probe() -> bool:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # never via a proxy
        if ca_file is not None:
            if not ca_file.exists():
                return False
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(ca_file))))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(url, timeout=1.0) as resp:
                return resp.status == expect
        except urllib.error.HTTPError as exc:
            return exc.code == expect
        except (OSError, ssl.SSLError):
            return False

    return probe


def port_owner(port: int) -> str | None:
    """`pid 123 (python -m local.host ...)` of the process listening on `port`, if it can be found."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="inet"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                cmd = " ".join(proc.cmdline())[:160] or proc.name()
                return f"pid {conn.pid} ({cmd})"
    except Exception:  # psutil missing or not allowed to look: the message just names the port
        return None
    return None


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the servers use it: only a live listener (not TIME_WAIT) counts as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Child side of fork: own process group, and SIGTERM when the launcher dies (Linux) — no orphans."""
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Component:
    name: str
    argv: list[str]
    port: int
    probe: Callable[[], bool]
    module: str | None = None  # Python module that must exist for the component to run
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None


class Stack:
    """Starts/stops the local stack. `ports` overrides any of `DEFAULT_PORTS`; `env` is added for every child."""

    def __init__(
        self,
        *,
        root: Path = PROJECT_ROOT,
        ports: Mapping[str, int] | None = None,
        env: Mapping[str, str] | None = None,
        only: set[str] | None = None,
        extra_args: Mapping[str, list[str]] | None = None,
        readiness_timeout: float = 30.0,
        python: str = sys.executable,
        workers: int = 1,
    ) -> None:
        self.root = Path(root)
        self.ports = {**DEFAULT_PORTS, **(ports or {})}
        # Flex Consumption scales out by instances: N host processes on the same Service Bus queue.
        self.workers = [HOST, *(f"{HOST}-{i}" for i in range(2, max(1, workers) + 1))]
        for name in self.workers[1:]:
            self.ports.setdefault(name, free_port())
        self.extra_env = dict(env or {})
        self.extra_args = {
            k: list(v) for k, v in (extra_args or {}).items()
        }  # e.g. {"authority": ["--token-lifetime", "5"]}
        self.only = only
        self.readiness_timeout = readiness_timeout
        self.python = python
        self.local_dir = self.root / ".local"
        self.log_dir = self.local_dir / "logs"
        self.ca_file = self.local_dir / "ca.pem"
        self.started: list[Component] = []
        self.skipped: dict[str, str] = {}
        self._lock = threading.Lock()
        self._logs: list[IO[bytes]] = []
        self._saved_env: dict[str, str | None] = {}

    @classmethod
    def on_free_ports(cls, **kwargs: Any) -> Stack:
        """A stack on ephemeral ports (a second stack next to `make run`, or parallel test sessions)."""
        return cls(ports={name: free_port() for name in DEFAULT_PORTS}, **kwargs)

    # ----- addresses -----
    @property
    def host_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['host']}"

    @property
    def worker_urls(self) -> dict[str, str]:
        """Every function-host worker (instance) by name: `host` first, then `host-2`, ..."""
        return {name: f"http://127.0.0.1:{self.ports[name]}" for name in self.workers}

    @property
    def function_key(self) -> str:
        return self.child_env().get("SYNC_FUNCTION_KEY", "local-dev-key")

    def url(self, name: str) -> str:
        scheme = {"authority": "https", "azurite": "https", "amqp_peer": "amqp"}.get(name, "http")
        return f"{scheme}://127.0.0.1:{self.ports[name]}"

    def child_env(self) -> dict[str, str]:
        p = self.ports
        env = dict(os.environ)
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "SYNC_AUTHORITY_CA": str(self.ca_file),
                "SYNC_AUTHORITY_HOST": f"https://127.0.0.1:{p['authority']}",
                "TABLES_ENDPOINT": f"https://127.0.0.1:{p['azurite']}/devstoreaccount1",
                "BC_BASE_URL": f"http://127.0.0.1:{p['bc_sim']}",
                "DATAVERSE_URL": f"http://127.0.0.1:{p['dv_sim']}",
                "SERVICEBUS_CONNECTION_STRING": (
                    f"Endpoint=sb://127.0.0.1:{p['amqp_peer']};SharedAccessKeyName=RootManageSharedAccessKey;"
                    "SharedAccessKey=local;UseDevelopmentEmulator=true"
                ),
                "SYNC_PUBLIC_BASE_URL": f"http://127.0.0.1:{p['host']}",
                **self.identity_env(),
            }
        )
        env.setdefault("SYNC_FUNCTION_KEY", "local-dev-key")
        # The local stack's own secrets, set explicitly (the service has no default for them).
        env.setdefault("BC_WEBHOOK_CLIENT_STATE", "local-bc-client-state")
        env.setdefault("DATAVERSE_WEBHOOK_KEY", "local-dv-webhook-key")
        env.update(self.extra_env)
        return env

    def identity_env(self) -> dict[str, str]:
        """Who the host is: the App Service managed-identity endpoint and the federated app registration, and
        Service Bus by namespace + managed identity (as the Functions host's identity-based connection)."""
        p = self.ports
        return {
            "IDENTITY_ENDPOINT": f"https://127.0.0.1:{p['authority']}/msi/token",
            "IDENTITY_HEADER": IDENTITY_HEADER,
            "SYNC_MANAGED_IDENTITY_CLIENT_ID": LOCAL_MANAGED_IDENTITY_CLIENT_ID,
            "SYNC_AUTH_MODE": "federated",
            "SYNC_CLIENT_ID": LOCAL_CLIENT_ID,
            "SYNC_CLIENT_SECRET": "",  # federated: nothing to store; a secret must not be used by accident
            "ServiceBusConnection__fullyQualifiedNamespace": f"127.0.0.1:{p['amqp_peer']}",
            "ServiceBusConnection__credential": "managedidentity",
            "ServiceBusConnection__clientId": LOCAL_MANAGED_IDENTITY_CLIENT_ID,
            "SYNC_SERVICEBUS_TLS": "false",  # the peer speaks plain AMQP like the emulator
        }

    # ----- component table -----
    def components(self) -> list[Component]:
        return self._with_extra_args(self._base_components())

    def _base_components(self) -> list[Component]:
        p, py = self.ports, self.python
        jwks = f"https://127.0.0.1:{p['authority']}/{LOCAL_TENANT_ID}/discovery/v2.0/keys"
        discovery = f"https://127.0.0.1:{p['authority']}/{LOCAL_TENANT_ID}/v2.0/.well-known/openid-configuration"
        enforce = self._available("authority")
        # BC and Dataverse accept the app registration; storage and Service Bus the managed identity.
        sim_auth = ["--jwks-url", jwks, "--app-id", LOCAL_CLIENT_ID] if enforce else ["--no-auth"]
        mi = ["--jwks-url", jwks, "--ca-file", str(self.ca_file), "--app-id", LOCAL_MANAGED_IDENTITY_CLIENT_ID]
        azurite = str(self.root / "node_modules" / ".bin" / "azurite-table")
        lookups = self.root / "local" / "azurite" / "point_lookups.js"
        # Azurite behind the checking proxy (which starts it on a private port), or alone without an authority.
        tables_front = (
            [py, "-m", "local.tables_proxy", "--port", str(p["azurite"]), *mi, "--", azurite]
            if enforce
            else [azurite, "--tableHost", "127.0.0.1", "--tablePort", str(p["azurite"])]
        )
        return [
            Component(
                "azurite",
                [
                    *tables_front,
                    "--inMemoryPersistence",
                    "--disableTelemetry",
                    "--silent",
                    "--oauth",
                    "basic",
                    "--cert",
                    str(self.local_dir / "server.pem"),
                    "--key",
                    str(self.local_dir / "server-key.pem"),
                ],
                p["azurite"],
                tcp_probe(p["azurite"]),
                # Point lookups through Azurite's RowKey index, not a partition scan (see the file).
                env={"NODE_OPTIONS": f"--require {lookups}"} if lookups.exists() else {},
            ),
            Component(
                "authority",
                [py, "-m", "local.authority", "--port", str(p["authority"])],
                p["authority"],
                http_probe(discovery, ca_file=self.ca_file),
                module="local.authority",
            ),
            Component(
                "bc_sim",
                [
                    py,
                    "-m",
                    "local.bc_sim",
                    "--port",
                    str(p["bc_sim"]),
                    "--notify-delay",
                    "1",
                    "--webhook-time-scale",
                    "0.001",
                    *sim_auth,
                ],
                p["bc_sim"],
                http_probe(f"http://127.0.0.1:{p['bc_sim']}/_sim/stats"),
                module="local.bc_sim",
            ),
            Component(
                "dv_sim",
                [
                    py,
                    "-m",
                    "local.dv_sim",
                    "--port",
                    str(p["dv_sim"]),
                    "--audience",
                    f"http://127.0.0.1:{p['dv_sim']}",
                    *sim_auth,
                ],
                p["dv_sim"],
                http_probe(f"http://127.0.0.1:{p['dv_sim']}/_sim/stats"),
                module="local.dv_sim",
            ),
            Component(
                "amqp_peer",
                [
                    py,
                    "-m",
                    "local.amqp_peer",
                    "--port",
                    str(p["amqp_peer"]),
                    "--control-port",
                    str(p["amqp_control"]),
                    *(mi if enforce else []),
                ],
                p["amqp_peer"],
                tcp_probe(p["amqp_peer"]),
                module="local.amqp_peer",
            ),
            *(self._worker(name) for name in self.workers),
        ]

    def _worker(self, name: str) -> Component:
        """One function-host instance. Every instance serves HTTP and takes Service Bus messages; timers run
        on the first only (in Azure a timer trigger is a singleton across instances, held by a blob lease)."""
        port = self.ports[name]
        timers = [] if name == HOST else ["--no-timers"]
        return Component(
            name,
            [self.python, "-m", "local.host", "--port", str(port), *timers],
            port,
            http_probe(f"http://127.0.0.1:{port}/admin/host/status"),
            module="local.host",
        )

    def _with_extra_args(self, components: list[Component]) -> list[Component]:
        for c in components:
            c.argv = [*c.argv, *self.extra_args.get(c.name, [])]
        return components

    def _available(self, name: str) -> bool:
        name = HOST if name in self.workers else name
        if self.only is not None and name not in self.only:
            return False
        if name == "azurite":
            return (self.root / "node_modules" / ".bin" / "azurite-table").exists()
        try:
            return importlib.util.find_spec(f"local.{name}.__main__") is not None
        except ModuleNotFoundError:
            return False

    # ----- lifecycle -----
    def busy_ports(self) -> dict[str, str]:
        """`{component: "port N in use by ..."}` for every port of this stack that is already taken."""
        out = {}
        for name, port in self.ports.items():
            if self.only is not None and (HOST if name in self.workers else name) not in self.only:
                continue
            if port_in_use(port):
                owner = port_owner(port)
                out[name] = f"port {port} ({name}) is already in use" + (f" by {owner}" if owner else "")
        return out

    def start(self) -> Stack:
        busy = self.busy_ports()
        if busy:
            raise StackError(
                "; ".join(busy.values()) + ". Is `make run` (python -m local.stack run) already running? "
                "Stop it, or start this stack on other ports (Stack.on_free_ports())."
            )
        from local.certs import ensure_local_certs

        ensure_local_certs(self.local_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._export_identity_endpoint()
        atexit.register(self.stop)
        _install_sigterm_exit()
        table = {c.name: c for c in self.components()}
        env = self.child_env()
        if not self._available("amqp_peer"):
            env.setdefault("SYNC_LOCAL_QUEUE_SOURCE", "memory")
        try:
            for wave in (_FIRST_WAVE, tuple(self.workers)):
                launched = [self._launch(table[name], env) for name in wave]
                for component in launched:
                    if component is not None:
                        self._wait_ready(component)
        except BaseException:
            self.stop()
            raise
        return self

    def _export_identity_endpoint(self) -> None:
        """MSAL's ManagedIdentityClient reads IDENTITY_ENDPOINT/IDENTITY_HEADER from the process environment,
        so in-process clients built from `child_env()` (tests, benchmarks) need them here too: this process
        plays the App Service sandbox. Restored by `stop()`."""
        if not self._available("authority"):
            return
        identity = self.identity_env()
        self._saved_env = {k: os.environ.get(k) for k in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")}
        for key in self._saved_env:
            os.environ[key] = identity[key]

    def _restore_identity_endpoint(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}

    def _launch(self, component: Component, env: dict[str, str]) -> Component | None:
        if not self._available(component.name):
            if self.only is None or component.name in self.only:
                reason = "node_modules missing: run `npm ci`" if component.name == "azurite" else "not written yet"
                self.skipped[component.name] = reason
                _say(f"WARNING: skipping {component.name} ({component.module or 'azurite'}: {reason})")
            return None
        component.log_path = self.log_dir / f"{component.name}.log"
        log = open(component.log_path, "wb")  # closed in stop()
        self._logs.append(log)
        component.process = subprocess.Popen(
            component.argv,
            cwd=self.root,
            env={**env, **component.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # setsid + parent-death signal only
        )
        with self._lock:
            self.started.append(component)
        return component

    def _wait_ready(self, component: Component) -> None:
        deadline = time.monotonic() + self.readiness_timeout
        assert component.process is not None
        while True:
            if component.probe():
                _say(f"{component.name} ready on 127.0.0.1:{component.port} (pid {component.process.pid})")
                return
            code = component.process.poll()
            if code is not None:
                raise StackError(
                    f"{component.name} exited with code {code} before it was ready:\n{self._tail(component)}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{component.name} was not ready on port {component.port} within {self.readiness_timeout:.0f}s:\n"
                    f"{self._tail(component)}"
                )
            time.sleep(0.1)

    @staticmethod
    def _tail(component: Component, lines: int = 15) -> str:
        if component.log_path is None or not component.log_path.exists():
            return "(no log)"
        text = component.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"  {component.name}| {line}" for line in text) + f"\n  (full log: {component.log_path})"

    def stop(self) -> None:
        """Terminate the process groups this stack started (newest first). Idempotent."""
        with self._lock:
            components, self.started = list(reversed(self.started)), []
        for component in components:
            proc = component.process
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)  # the group this stack created for the component
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for component in components:
            proc = component.process
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for log in self._logs:
            log.close()
        self._logs.clear()
        self._restore_identity_endpoint()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def restart(self, name: str, *, hard: bool = True) -> None:
        """Kills one component (SIGKILL by default: a crash, not a shutdown) and starts it again, same ports
        and environment — for fault tests (a worker dying mid-batch, Azurite restarting)."""
        with self._lock:
            component = next(c for c in self.started if c.name == name)
            self.started.remove(component)
        assert component.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(component.process.pid, signal.SIGKILL if hard else signal.SIGTERM)
        component.process.wait(timeout=10)
        env = self.child_env()
        if not self._available("amqp_peer"):
            env.setdefault("SYNC_LOCAL_QUEUE_SOURCE", "memory")
        fresh = {c.name: c for c in self.components()}[name]
        self._launch(fresh, env)
        self._wait_ready(fresh)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def died(self) -> list[str]:
        return [
            f"{c.name} (exit {c.process.poll()})" for c in self.started if c.process and c.process.poll() is not None
        ]

    # ----- demo data -----
    def seed_demo_data(self, plan: Mapping[str, list[tuple[str, int]]] = DEMO_DATA) -> dict[str, int]:
        """POST `/_sim/seed` to each simulator that runs; a simulator without seeding is skipped with a warning."""
        import json

        created: dict[str, int] = {}
        running = {c.name for c in self.started}
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for sim, entities in plan.items():
            if sim not in running:
                continue
            for entity, count in entities:
                body = json.dumps({"entity": entity, "count": count, "prefix": "Demo"}).encode()
                req = urllib.request.Request(
                    f"http://127.0.0.1:{self.ports[sim]}/_sim/seed",
                    data=body,
                    method="POST",
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with opener.open(req, timeout=30) as resp:
                        created[f"{sim}:{entity}"] = int(json.loads(resp.read() or b"{}").get("created", 0))
                except (OSError, ValueError) as exc:
                    _say(f"WARNING: could not seed {entity} in {sim}: {exc}")
        return created


def _install_sigterm_exit() -> None:
    """Turn SIGTERM into SystemExit so `finally`/atexit stop the children (only if nobody else handles it)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):

        def _exit(_signum: int, _frame: object) -> None:
            raise SystemExit(143)

        signal.signal(signal.SIGTERM, _exit)


# ----- CLI -----
def _run(args: argparse.Namespace) -> int:
    env = {}
    if args.no_scheduled_sync:
        env["SYNC_SCHEDULED_SYNC"] = "false"
    stack = Stack(env=env, readiness_timeout=args.timeout, workers=args.workers)
    started = time.monotonic()
    try:
        stack.start()
    except StackError as exc:
        _say(f"ERROR: {exc}")
        return 1
    if args.demo_data:
        seeded = stack.seed_demo_data()
        if seeded:
            _say("demo data: " + ", ".join(f"{k}={v}" for k, v in seeded.items()))
    _say(f"ready in {time.monotonic() - started:.1f}s; logs in {stack.log_dir}")
    _say(f"  curl {stack.host_url}/api/health")
    _say(f"  curl -H 'x-functions-key: {stack.function_key}' {stack.host_url}/api/mappings")
    _say("Ctrl-C stops everything.")
    reported: set[str] = set()
    try:
        while True:
            time.sleep(1)
            for dead in set(stack.died()) - reported:
                _say(f"WARNING: {dead} stopped; see {stack.log_dir}")
                reported.add(dead)
    except KeyboardInterrupt:
        _say("stopping...")
    finally:
        stack.stop()
    return 0


def _status(_args: argparse.Namespace) -> int:
    stack = Stack()
    up = 0
    for component in stack.components():
        ok = component.probe()
        up += ok
        owner = port_owner(component.port) if ok else None
        state = "ready" if ok else "down"
        print(f"{component.name:10} 127.0.0.1:{component.port:<6} {state}" + (f"  {owner}" if owner else ""))
    return 0 if up == len(DEFAULT_PORTS) else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.stack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start everything and wait for Ctrl-C")
    run.add_argument("--demo-data", action="store_true", help="seed the simulators with demo records")
    run.add_argument("--no-scheduled-sync", action="store_true", help="set SYNC_SCHEDULED_SYNC=false")
    run.add_argument("--timeout", type=float, default=30.0, help="readiness timeout per component, seconds")
    run.add_argument("--workers", type=int, default=1, help="function-host instances on the same queue (scale-out)")
    sub.add_parser("status", help="which components answer on their ports")
    args = parser.parse_args(argv)
    return _run(args) if args.command == "run" else _status(args)


if __name__ == "__main__":
    sys.exit(main())
