"""Forwarding a /v1 generation request to the engine that serves its model (a managed vLLM, or an
external OpenAI-compatible server), streaming included. Keys, rate limit, model names and the
error shape stay ours; the engine's answer passes through unchanged except for the model name
(and system_fingerprint, which names the version that answered): prompt_token_ids,
choices[].token_ids, logprobs, finish_reason and usage are the engine's.

A stream is passed on line by line as the engine sends it. When the client goes away, the WSGI
server closes the response's iterator, which closes the upstream connection; vLLM aborts a
request whose client disconnected, so the decode stops there too. A non-streaming answer comes
only when the engine is done, so while it waits the proxy watches the client's socket (gunicorn
puts it in the WSGI environ): a client that hangs up closes the upstream connection the same way."""

from __future__ import annotations

import http.client
import json
import logging
import select
import socket
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse

from .engines import EngineRoute, engine_unavailable
from .errors import OpenAIError

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 600


def engine_url() -> str:
    return (getattr(settings, "RLHF_SERVING_ENGINE_URL", "") or "").rstrip("/")


class ClientGone(Exception):
    """The client hung up before the engine answered; the engine's request was closed (aborted)."""


def client_gone(sock: socket.socket) -> bool:
    """True when the peer closed (or reset) its side: the socket reads EOF. A client waiting for
    its answer sends nothing, so any bytes waiting (a pipelined request) mean it is still there."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def _await_answer(conn: http.client.HTTPConnection, client: socket.socket | None) -> None:
    """Block until the engine starts answering; meanwhile a client that hangs up raises ClientGone
    (the caller closes the engine connection, which aborts the engine's request). poll, not
    select: a busy server's descriptors may be past select's 1024. A client with bytes waiting is
    there (a pipelined request) and is no longer watched, so its readiness cannot spin the loop."""
    if client is None or conn.sock is None:
        return
    poller = select.poll()
    poller.register(conn.sock, select.POLLIN)
    poller.register(client, select.POLLIN)
    engine_fd, client_fd = conn.sock.fileno(), client.fileno()
    while True:
        for fd, _events in poller.poll(1000):
            if fd == engine_fd:
                return
            if fd == client_fd:
                if client_gone(client):
                    raise ClientGone
                poller.unregister(client)


def _connect(route: EngineRoute, endpoint: str, body: dict, client: socket.socket | None = None
             ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    url = urlsplit(route.openai_url)
    cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = cls(url.hostname, url.port, timeout=TIMEOUT_SECONDS)
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    engine_key = getattr(settings, "RLHF_SERVING_ENGINE_API_KEY", "")
    if engine_key and route.engine_id is None:
        headers["Authorization"] = f"Bearer {engine_key}"
    payload = json.dumps({**body, "model": route.upstream_model}).encode()
    try:
        conn.request("POST", f"{url.path.rstrip('/')}/{endpoint}", payload, headers)
        if not body.get("stream"):  # a stream's client going away is seen by the relay instead
            _await_answer(conn, client)
        return conn, conn.getresponse()
    except BaseException:
        conn.close()
        raise


def proxy_forward(*, endpoint: str, body: dict, route_for: Callable[[], EngineRoute],
                  greedy_copies: int = 1, client: socket.socket | None = None) -> HttpResponse:
    """POST body to the routed engine's /v1/{endpoint}. A refused connection (an engine that was
    just stopped after draining) is routed again once: the table then names its replacement.

    greedy_copies: n of a greedy request. vLLM refuses n > 1 at temperature 0 ("n must be 1 when
    using greedy sampling"); OpenAI and our fallback answer n identical completions, so the engine
    is asked once per prompt and each choice is repeated here.

    client: the client's socket, watched while a non-streaming answer is awaited (see above)."""
    if greedy_copies > 1:
        body = {**body, "n": 1}
    route = route_for()
    try:
        try:
            conn, upstream = _connect(route, endpoint, body, client)
        except ConnectionRefusedError:
            route = route_for()
            conn, upstream = _connect(route, endpoint, body, client)
    except OSError as exc:
        raise _unreachable(route, exc) from None
    except ClientGone:
        log.info("client hung up before %s answered: its request was aborted", route.openai_url)
        return HttpResponse(status=499)  # nginx's "client closed request"; nobody reads it
    if upstream.status >= 400:
        try:
            raise _engine_error(upstream.status, upstream.read())
        finally:
            conn.close()
    if body.get("stream"):
        response = StreamingHttpResponse(_relay(conn, upstream, route), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass events on at once
        return response
    try:
        answer = json.loads(upstream.read())
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _unreachable(route, exc) from None
    finally:
        conn.close()
    if greedy_copies > 1:
        answer = _repeat_choices(answer, greedy_copies)
    return HttpResponse(json.dumps(_ours(answer, route)), content_type="application/json")


def _repeat_choices(answer: dict, n: int) -> dict:
    """Each prompt's one choice as n choices (index = prompt * n + copy), usage counted n times."""
    choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
    answer["choices"] = [{**c, "index": c.get("index", 0) * n + j} for c in choices for j in range(n)]
    usage = answer.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        usage["completion_tokens"] *= n
        usage["total_tokens"] = usage.get("prompt_tokens", 0) + usage["completion_tokens"]
    return answer


def _ours(obj: dict, route: EngineRoute) -> dict:
    if isinstance(obj, dict) and "model" in obj:
        obj["model"] = route.served.requested
        obj["system_fingerprint"] = route.served.fingerprint
    return obj


def _relay(conn: http.client.HTTPConnection, upstream: http.client.HTTPResponse, route: EngineRoute) -> Iterator[bytes]:
    """The engine's server-sent events, one event a chunk, each with our model name."""
    try:
        for line in upstream:
            if line.startswith(b"data: {"):
                try:
                    line = b"data: " + json.dumps(_ours(json.loads(line[6:]), route), ensure_ascii=False).encode() + b"\n"
                except ValueError:
                    pass
                yield line + b"\n"
            elif line.startswith(b"data: "):
                yield line + b"\n"
    except (OSError, http.client.HTTPException) as exc:  # the engine went away mid-stream
        log.warning("engine stream from %s broke: %s", route.openai_url, exc)
        yield ("data: " + json.dumps(engine_unavailable(
            "The inference engine stopped while generating this answer.").body()) + "\n\n").encode()
        yield b"data: [DONE]\n\n"
    finally:
        # Reached when the stream ends and when the client went away (the WSGI server closes this
        # generator): closing the connection makes vLLM abort the request. The response holds the
        # socket (the connection let go of it when the response began), so it is closed first.
        upstream.close()
        conn.close()


def _unreachable(route: EngineRoute, exc: BaseException) -> OpenAIError:
    what = f"engine {route.engine_id}" if route.engine_id else "engine"
    return engine_unavailable(f"The inference {what} at {route.openai_url} is unreachable ({exc}); "
                              "see /healthz.", retry_after=5)


def _engine_error(status: int, raw: bytes) -> OpenAIError:
    """The engine's refusal in our shape: its message and param, our type and code names."""
    try:
        error = json.loads(raw).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    message = error.get("message") if isinstance(error, dict) else None
    if not message:
        message = f"The inference engine answered HTTP {status}: {raw[:300].decode(errors='replace')}"
    code = error.get("code") if isinstance(error, dict) else None
    return OpenAIError(str(message), status=status if status in (400, 404, 413, 429, 503) or status < 500 else 502,
                       param=error.get("param") if isinstance(error, dict) else None,
                       code=code if isinstance(code, str) else ("invalid_value" if status < 500 else "engine_error"))
