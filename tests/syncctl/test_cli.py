"""The CLI builds the contract's requests and waits for jobs with a progress bar (against a stub server)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from syncctl.__main__ import main, progress_bar


class _Stub(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, Any]] = []
    polls = 0

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"null")
        _Stub.seen.append(("POST", self.path, body, self.headers.get("x-functions-key")))
        self._answer(202, {"jobId": "j1", "status": "queued"}, {"Location": "/api/jobs/j1"})

    def do_GET(self) -> None:
        if "/history" in self.path:  # a paged list of two pages
            page2 = "continuation=t" in self.path
            more = {} if page2 else {"nextLink": self.path.split("?")[0] + "?top=1000&continuation=t"}
            return self._answer(200, {"value": [{"at": "2" if page2 else "1"}], **more})
        _Stub.polls += 1
        status = "running" if _Stub.polls < 3 else "succeeded"
        self._answer(200, {"jobId": "j1", "status": status, "counts": {"modified": _Stub.polls}})

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def server() -> Any:
    srv = HTTPServer(("127.0.0.1", 0), _Stub)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def test_sync_sends_the_contract_body_and_waits_for_the_job(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--base-url",
            server,
            "--key",
            "k1",
            "sync",
            "CUSTOMER",
            "--bc-id",
            "a",
            "--bc-id",
            "b",
            "--direction",
            "toDataverse",
            "--force",
        ]
    )
    assert code == 0
    method, path, body, key = _Stub.seen[-1]
    assert (method, path, key) == ("POST", "/api/mappings/CUSTOMER/sync", "k1")
    assert body == {"bcIds": ["a", "b"], "direction": "toDataverse", "force": True}
    out = capsys.readouterr()
    assert '"status": "succeeded"' in out.out and "succeeded" in out.err and "[" in out.err


def test_progress_bar_is_full_when_done() -> None:
    assert progress_bar({"status": "succeeded", "counts": {"inserted": 5}}).startswith("[" + "#" * 30 + "]")
    assert "running" in progress_bar({"status": "running", "counts": {}})


def test_match_and_add_field_send_part_2_bodies(server: str) -> None:
    code = main(["--base-url", server, "--no-wait", "match", "CUSTOMER", "--bc-id", "a", "--field",
                 "displayName=name:1", "--field", "city=address1_city:1:cs", "--create-new-if-no-match",
                 "--sync-after"])  # fmt: skip
    assert code == 0
    method, path, body, _ = _Stub.seen[-1]
    assert (method, path) == ("POST", "/api/mappings/CUSTOMER/couplings/match")
    assert body == {
        "bcIds": ["a"],
        "matchFields": [
            {"bc": "displayName", "dataverse": "name", "priority": 1},
            {"bc": "city", "dataverse": "address1_city", "priority": 1, "caseSensitive": True},
        ],
        "createNewIfNoMatch": True,
        "syncAfter": True,
    }
    main(["--base-url", server, "add-field", "PAYMENT TERMS", "--bc", "addressLine2", "--dataverse", "address1_line2",
          "--trim", "--max-length", "50", "--use-for-match", "--match-priority", "2"])  # fmt: skip
    method, path, body, _ = _Stub.seen[-1]
    assert (method, path) == ("POST", "/api/mappings/PAYMENT%20TERMS/fields")
    assert body == {
        "bc": "addressLine2",
        "dataverse": "address1_line2",
        "transform": {"trim": True, "maxLength": 50},
        "useForMatch": True,
        "matchPriority": 2,
    }


def test_fields_table_shows_the_field_mapping_page() -> None:
    from syncctl.__main__ import fields_table

    text = fields_table(
        [
            {"id": "displayName~name", "direction": "bidirectional", "status": "enabled", "useForMatch": True,
             "matchPriority": 2, "caseSensitive": False, "userDefined": False, "transform": {"maxLength": 100}},
            {"id": "city~address1_city", "direction": "bidirectional", "status": "disabled", "useForMatch": False,
             "matchPriority": 0, "caseSensitive": False, "userDefined": True, "clearOnFail": True},
        ]
    )  # fmt: skip
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["ID", "DIRECTION", "STATUS", "MATCH", "USER"]
    assert "displayName~name" in lines[1] and " 2 " in lines[1] and '"maxLength": 100' in lines[1]
    assert "disabled" in lines[2] and "yes" in lines[2] and "clearOnFail" in lines[2]


def test_plan_and_history_commands(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """#22: ``plan`` sends Synchronize now's body (or a kind) to the plan route; ``history`` pages through."""
    assert main(["--base-url", server, "plan", "CUSTOMER", "--bc-id", "a", "--direction", "toDataverse"]) == 0
    method, path, body, _ = _Stub.seen[-1]
    assert (method, path, body) == ("POST", "/api/mappings/CUSTOMER/plan", {"bcIds": ["a"], "direction": "toDataverse"})
    main(["--base-url", server, "--no-wait", "plan", "CUSTOMER", "--kind", "full"])
    assert _Stub.seen[-1][1:3] == ("/api/mappings/CUSTOMER/plan", {"kind": "full"})
    capsys.readouterr()
    assert main(["--base-url", server, "history", "CUSTOMER", "b1"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"at": "1"}, {"at": "2"}]
