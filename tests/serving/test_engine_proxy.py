"""RLHF_SERVING_ENGINE=external with RLHF_SERVING_ENGINE_URL: /v1 forwards generation to an external OpenAI-compatible engine (a
stand-in for vLLM here), streaming included, keeping our keys, model names and error shape."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


class FakeEngine(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []
    root: str | None = None  # the checkpoint /v1/models names (vLLM's "root"); None: no /v1/models

    def do_GET(self):  # noqa: N802 - the http.server hook's name
        if self.path != "/v1/models" or FakeEngine.root is None:
            return self._send(404, {"error": {"message": "no such route"}})
        return self._send(200, {"object": "list", "data": [{"id": "policy", "object": "model",
                                                            "root": FakeEngine.root}]})

    def do_POST(self):  # noqa: N802 - the http.server hook's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeEngine.received.append((self.path, body))
        if body.get("max_tokens") == 999:
            return self._send(400, {"error": {"message": "too long", "type": "invalid_request_error",
                                              "param": "max_tokens", "code": None}})
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in ("Hel", "lo"):
                chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            return None
        return self._send(200, {"object": "chat.completion", "model": body["model"],
                                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                                             "finish_reason": "stop"}]})

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def engine(settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEngine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeEngine.received, FakeEngine.root = [], None
    from serving import engines

    engines._external_runs.clear()  # what an earlier server on a reused port said
    settings.RLHF_SERVING_ENGINE = "external"
    settings.RLHF_SERVING_ENGINE_URL = f"http://127.0.0.1:{server.server_port}/v1/"
    yield FakeEngine
    server.shutdown()
    server.server_close()


def post(body: dict, key: str):
    return Client().post("/v1/chat/completions", data=json.dumps(body), content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {key}")


BODY = {"model": "latest", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def test_requests_go_to_the_engine_with_the_checkpoint_as_model(engine, demo, api_key, settings):
    from serving.engine import loaded_versions

    answer = post(BODY, api_key).json()
    path, sent = engine.received[0]
    assert path == "/v1/chat/completions"
    assert sent["model"] == str(settings.ARTIFACTS_ROOT / "policies" / "a") and sent["max_tokens"] == 5
    assert answer["choices"][0]["message"]["content"] == "Hello" and answer["model"] == "latest"
    assert loaded_versions() == []  # nothing was loaded in the web process


def test_streams_pass_through(engine, demo, api_key):
    response = post({**BODY, "stream": True}, api_key)
    text = b"".join(response.streaming_content).decode()
    assert response["Content-Type"] == "text/event-stream"
    assert '"Hel"' in text and '"lo"' in text and text.endswith("data: [DONE]\n\n")


def test_engine_errors_and_our_checks(engine, demo, api_key, settings):
    assert post({**BODY, "max_tokens": 999}, api_key).json()["error"]["param"] == "max_tokens"
    assert post({**BODY, "model": "nope"}, api_key).status_code == 404
    assert post(BODY, "rlhf-wrong").status_code == 401
    assert post({**BODY, "temperature": 9}, api_key).status_code == 400
    assert len(engine.received) == 1  # only the first reached the engine
    settings.RLHF_SERVING_ENGINE_URL = "http://127.0.0.1:9/v1"
    response = post(BODY, api_key)
    assert response.status_code == 503 and response.json()["error"]["code"] == "engine_unavailable"
    assert "unreachable" in response.json()["error"]["message"]


def test_a_version_the_external_engine_does_not_run_is_refused_not_answered_by_another(engine, demo, api_key,
                                                                                      settings):
    """The external server runs policy B's checkpoint (its operator started it there; /v1/models
    names it, as vLLM does, under a mount point of its own): asking for A by id is a clear 404,
    never B's answer under A's id; an alias answers from B and says it was B."""
    a, b = demo["a"], demo["b"]
    engine.root = "/artifacts/policies/b"
    refused = post({**BODY, "model": str(a.pk)}, api_key)
    assert refused.status_code == 404, refused.content
    error = refused.json()["error"]
    assert error["code"] == "model_not_served" and error["param"] == "model"
    assert f"runs model version {b.pk}" in error["message"]
    assert engine.received == []  # nothing reached the engine
    by_id = post({**BODY, "model": str(b.pk)}, api_key).json()
    assert by_id["system_fingerprint"] == f"model-version-{b.pk}"
    alias = post(BODY, api_key).json()  # "latest": A is promoted, but the server runs B
    assert alias["system_fingerprint"] == f"model-version-{b.pk}" and alias["model"] == "latest"
    assert [sent["model"] for _, sent in engine.received] == [str(settings.ARTIFACTS_ROOT / b.path)] * 2


def test_a_client_is_gone_when_its_socket_reads_eof_not_while_it_waits():
    from serving.proxy import client_gone

    ours, theirs = socket.socketpair()
    assert not client_gone(ours)  # silent: waiting for its answer
    theirs.sendall(b"GET / HTTP/1.1\r\n")
    assert not client_gone(ours)  # a pipelined request: still there
    ours.recv(100)
    theirs.close()
    assert client_gone(ours)
    ours.close()


def test_awaiting_an_answer_sees_a_hang_up_and_does_not_spin_on_a_pipelining_client(monkeypatch):
    import time
    import types

    from serving import proxy

    engine_ours, engine_theirs = socket.socketpair()
    conn = types.SimpleNamespace(sock=engine_ours)
    client_ours, client_theirs = socket.socketpair()
    client_theirs.close()
    with pytest.raises(proxy.ClientGone):
        proxy._await_answer(conn, client_ours)  # hung up: the engine's request is to be closed

    client_ours, client_theirs = socket.socketpair()
    client_theirs.sendall(b"GET /next HTTP/1.1\r\n")  # bytes waiting: the client is there
    asked = []
    real = proxy.client_gone
    monkeypatch.setattr(proxy, "client_gone", lambda sock: asked.append(1) or real(sock))
    threading.Timer(0.5, lambda: engine_theirs.sendall(b"HTTP/1.1 200 OK\r\n")).start()
    started = time.monotonic()
    proxy._await_answer(conn, client_ours)
    assert time.monotonic() - started >= 0.4  # returned when the engine answered
    assert len(asked) == 1, f"asked {len(asked)} times whether the client is gone: a busy loop"
    for s in (engine_ours, engine_theirs, client_ours, client_theirs):
        s.close()
