"""A scripted fake model server on 127.0.0.1 for driving the real agent CLIs in tests.

It speaks the two streaming wire formats the agent CLIs use:

- Anthropic Messages (``POST /v1/messages`` with ``"stream": true``, server-sent
  events ``message_start`` ... ``message_stop``), which Claude Code calls through
  ``ANTHROPIC_BASE_URL``;
- OpenAI Responses (``POST /v1/responses``, events ``response.created`` ...
  ``response.completed``), which Codex calls through a ``model_providers`` entry.

Each test gives a script: a list of :class:`Reply`, :class:`Failure` or :class:`Hang`
steps. Every model request consumes the next step; when the script is exhausted the
``default`` step answers. Requests are recorded (path, headers, JSON body) so tests can
assert on what the CLI sent, e.g. that a resumed session carried its history.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """The model asks for one tool call."""

    name: str
    input: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Reply:
    """One successful model response: optional text, optional tool calls, usage.

    ``input_tokens`` is the uncached prompt part in Anthropic terms and the whole
    prompt (cached included) in OpenAI terms, as each API reports it.
    """

    text: str = ""
    tool_calls: Sequence[ToolCall] = ()
    input_tokens: int = 1200
    output_tokens: int = 35
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    model: str | None = None
    delay_s: float = 0.0
    stall_after_first_event: bool = False


@dataclasses.dataclass(frozen=True)
class Failure:
    """An HTTP error answer (401, 429, 500...)."""

    status: int
    message: str = "error"
    retry_after_s: float | None = None


@dataclasses.dataclass(frozen=True)
class Hang:
    """Accept the request and never answer (until the server stops)."""


Step = Reply | Failure | Hang


@dataclasses.dataclass
class RecordedRequest:
    """A request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeModelServer:
    """A threaded HTTP server answering model requests from a script.

    Use as a context manager; ``url`` is the base URL (``http://127.0.0.1:PORT``).
    """

    def __init__(self, script: Sequence[Step] = (), *, default: Step | None = None) -> None:
        self._script = list(script)
        self._default: Step = default if default is not None else Reply(text="ok")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.requests: list[RecordedRequest] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL of the server."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and release hanging requests."""
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def next_step(self, request: RecordedRequest) -> Step:
        """Record ``request`` and return the step that answers it."""
        with self._lock:
            self.requests.append(request)
            return self._script.pop(0) if self._script else self._default

    def model_requests(self, path: str | None = None) -> list[RecordedRequest]:
        """The recorded model requests, optionally only those to ``path``."""
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def wait_stopped(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until the server stops; True if it did."""
        return self._stop.wait(timeout_s)


def _handler_for(server: FakeModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            # Model listings and health probes: answer with an empty list.
            self._send_json(200, {"object": "list", "data": [], "models": []})

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            path = self.path.split("?", 1)[0]
            if not path.endswith(("/messages", "/responses")):
                # count_tokens, telemetry and the like: a plain, harmless answer.
                self._send_json(200, {"input_tokens": 10})
                return
            request = RecordedRequest(path=path, headers=dict(self.headers.items()), body=body)
            step = server.next_step(request)
            if isinstance(step, Hang):
                server.wait_stopped(3600)
                return
            if isinstance(step, Failure):
                self._send_failure(step, anthropic=path.endswith("/messages"))
                return
            if step.delay_s and server.wait_stopped(step.delay_s):
                return
            if path.endswith("/messages"):
                events = anthropic_events(step, body)
                if not body.get("stream"):
                    self._send_json(200, anthropic_message(step, body))
                    return
            else:
                events = responses_events(step, body)
            self._send_sse(events, stall=step.stall_after_first_event)

        def _send_json(self, status: int, payload: Mapping[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send_failure(self, step: Failure, *, anthropic: bool) -> None:
            kind = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
            error_type = kind.get(step.status, "api_error")
            if anthropic:
                payload: dict[str, Any] = {
                    "type": "error",
                    "error": {"type": error_type, "message": step.message},
                }
            else:
                code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(step.status)
                payload = {"error": {"message": step.message, "type": error_type, "code": code}}
            data = json.dumps(payload).encode()
            self.send_response(step.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if step.retry_after_s is not None:
                self.send_header("Retry-After", f"{step.retry_after_s:g}")
                self.send_header("x-should-retry", "true")
            self.end_headers()
            self.wfile.write(data)

        def _send_sse(self, events: list[tuple[str, dict[str, Any]]], *, stall: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for number, (name, data) in enumerate(events):
                    chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    if stall and number == 0:
                        server.wait_stopped(3600)
                        return
            except (BrokenPipeError, ConnectionResetError):
                return

    return Handler


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def anthropic_message(step: Reply, body: Mapping[str, Any]) -> dict[str, Any]:
    """A non-streaming Messages API answer for ``step``."""
    content: list[dict[str, Any]] = []
    if step.text:
        content.append({"type": "text", "text": step.text})
    for call in step.tool_calls:
        content.append(
            {"type": "tool_use", "id": _new_id("toolu"), "name": call.name, "input": call.input}
        )
    return {
        "id": _new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": step.model or body.get("model", "claude-sonnet-4-5"),
        "content": content,
        "stop_reason": "tool_use" if step.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(step, output_tokens=step.output_tokens),
    }


def _anthropic_usage(step: Reply, *, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": step.input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": step.cache_write_tokens,
        "cache_read_input_tokens": step.cache_read_tokens,
    }


def anthropic_events(step: Reply, body: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The Messages API server-sent events for ``step``."""
    message = anthropic_message(step, body)
    start = dict(
        message, content=[], stop_reason=None, usage=_anthropic_usage(step, output_tokens=1)
    )
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": dict(block, input={}),
                    },
                )
            )
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events.append(
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": step.output_tokens},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def responses_events(step: Reply, body: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The OpenAI Responses API server-sent events for ``step``."""
    response_id = _new_id("resp")
    model = step.model or body.get("model", "gpt-5")
    output: list[dict[str, Any]] = []
    events: list[tuple[str, dict[str, Any]]] = []
    base = {"id": response_id, "object": "response", "model": model, "output": []}
    events.append(
        (
            "response.created",
            {"type": "response.created", "response": dict(base, status="in_progress")},
        )
    )
    if step.text:
        item_id = _new_id("msg")
        item = {
            "type": "message",
            "id": item_id,
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": step.text, "annotations": []}],
        }
        index = len(output)
        events.append(
            (
                "response.output_item.added",
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": dict(item, status="in_progress", content=[]),
                },
            )
        )
        events.append(
            (
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "item_id": item_id,
                    "output_index": index,
                    "content_index": 0,
                    "delta": step.text,
                },
            )
        )
        events.append(
            (
                "response.output_item.done",
                {"type": "response.output_item.done", "output_index": index, "item": item},
            )
        )
        output.append(item)
    for call in step.tool_calls:
        item = {
            "type": "function_call",
            "id": _new_id("fc"),
            "call_id": _new_id("call"),
            "name": call.name,
            "arguments": json.dumps(call.input),
            "status": "completed",
        }
        index = len(output)
        events.append(
            (
                "response.output_item.added",
                {"type": "response.output_item.added", "output_index": index, "item": item},
            )
        )
        events.append(
            (
                "response.output_item.done",
                {"type": "response.output_item.done", "output_index": index, "item": item},
            )
        )
        output.append(item)
    usage = {
        "input_tokens": step.input_tokens,
        "input_tokens_details": {"cached_tokens": step.cache_read_tokens},
        "output_tokens": step.output_tokens,
        "output_tokens_details": {"reasoning_tokens": step.reasoning_tokens},
        "total_tokens": step.input_tokens + step.output_tokens,
    }
    events.append(
        (
            "response.completed",
            {
                "type": "response.completed",
                "response": dict(base, status="completed", output=output, usage=usage),
            },
        )
    )
    return events


def iter_text(events: Iterator[tuple[str, dict[str, Any]]]) -> str:
    """Concatenate the text deltas of a stream (used by the server's own tests)."""
    parts = []
    for _, data in events:
        delta = data.get("delta")
        if isinstance(delta, dict) and delta.get("type") == "text_delta":
            parts.append(delta["text"])
        elif data.get("type") == "response.output_text.delta":
            parts.append(data["delta"])
    return "".join(parts)
