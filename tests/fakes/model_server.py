"""A scripted fake model server on 127.0.0.1 for driving the real agent CLIs in tests.

It speaks the wire formats the agents use:

- Anthropic Messages (``POST /v1/messages`` with ``"stream": true``, server-sent
  events ``message_start`` ... ``message_stop``), which Claude Code calls through
  ``ANTHROPIC_BASE_URL``;
- OpenAI Responses (``POST /v1/responses``, events ``response.created`` ...
  ``response.completed``), which Codex calls through a ``model_providers`` entry;
- OpenAI Chat Completions (``POST /v1/chat/completions``, streamed as ``data:`` chunks
  ending with ``data: [DONE]``, tool-call arguments split over several chunks, or one
  JSON document when ``"stream"`` is false), which the ``openai`` engine and OpenCode
  call;
- Gemini (``POST /v1beta/models/M:streamGenerateContent?alt=sse`` and
  ``:generateContent``), which Gemini CLI calls through ``GOOGLE_GEMINI_BASE_URL``.

A :class:`ToolCall` with ``raw_arguments`` sends those exact characters as the
arguments (malformed JSON, for instance), for agents that must survive bad calls.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """The model asks for one tool call."""

    name: str
    input: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    raw_arguments: str | None = None

    @property
    def arguments(self) -> str:
        """The arguments as sent: ``raw_arguments`` if given, else ``input`` as JSON."""
        return self.raw_arguments if self.raw_arguments is not None else json.dumps(self.input)


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

    def __init__(
        self,
        script: Sequence[Step] = (),
        *,
        default: Step | None = None,
        aside: Callable[[RecordedRequest], bool] | None = None,
    ) -> None:
        """Serve ``script``, then ``default``.

        Args:
            script: the steps, one per model request.
            default: answers once the script is exhausted (default: a short text).
            aside: requests it matches (an agent's side calls, such as OpenCode's title
                generation) get a short text answer without consuming the script.
        """
        self._aside = aside
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
            if self._aside is not None and self._aside(request):
                return Reply(text="A short title", input_tokens=10, output_tokens=3)
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
            if path.endswith(":countTokens"):
                self._send_json(200, {"totalTokens": 10})
                return
            if not path.endswith(_MODEL_PATHS):
                # count_tokens, telemetry and the like: a plain, harmless answer.
                self._send_json(200, {"input_tokens": 10})
                return
            request = RecordedRequest(path=path, headers=dict(self.headers.items()), body=body)
            step = server.next_step(request)
            if isinstance(step, Hang):
                server.wait_stopped(3600)
                return
            if isinstance(step, Failure):
                self._send_failure(step, path=path)
                return
            if step.delay_s and server.wait_stopped(step.delay_s):
                return
            if path.endswith("/chat/completions"):
                if not body.get("stream"):
                    self._send_json(200, chat_completion(step, body))
                    return
                self._send_data(chat_chunks(step, body), stall=step.stall_after_first_event)
                return
            if path.endswith((":streamGenerateContent", ":generateContent")):
                model = path.rsplit("/", 1)[-1].split(":", 1)[0]
                if path.endswith(":generateContent"):
                    self._send_json(200, gemini_response(step, model))
                    return
                chunks = gemini_chunks(step, model)
                self._send_data(chunks, stall=step.stall_after_first_event, done=False)
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

        def _send_failure(self, step: Failure, *, path: str) -> None:
            kind = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
            error_type = kind.get(step.status, "api_error")
            google = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED"}
            if "GenerateContent" in path or "generateContent" in path:
                payload: dict[str, Any] = {
                    "error": {
                        "code": step.status,
                        "message": step.message,
                        "status": google.get(step.status, "INTERNAL"),
                    }
                }
            elif path.endswith("/messages"):
                payload = {
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

        def _send_data(
            self, chunks: list[dict[str, Any]], *, stall: bool, done: bool = True
        ) -> None:
            """Server-sent ``data:`` lines (no event names), as OpenAI and Gemini send."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for number, data in enumerate(chunks):
                    self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()
                    if stall and number == 0:
                        server.wait_stopped(3600)
                        return
                if done:
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return

    return Handler


#: request paths answered from the script (others get a harmless answer)
_MODEL_PATHS = (
    "/messages",
    "/responses",
    "/chat/completions",
    ":streamGenerateContent",
    ":generateContent",
)


def is_title_request(request: RecordedRequest) -> bool:
    """OpenCode's title-generation side call (its system prompt says so)."""
    messages = request.body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict):
        return False
    return "title generator" in str(messages[0].get("content", ""))


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def anthropic_message(step: Reply, body: Mapping[str, Any]) -> dict[str, Any]:
    """A non-streaming Messages API answer for ``step``."""
    content: list[dict[str, Any]] = []
    if step.text:
        content.append({"type": "text", "text": step.text})
    for call in step.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": _new_id("toolu"),
                "name": call.name,
                "input": dict(call.input),
            }
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
            "arguments": call.arguments,
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


def _chat_usage(step: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": step.input_tokens,
        "completion_tokens": step.output_tokens,
        "total_tokens": step.input_tokens + step.output_tokens,
        "prompt_tokens_details": {"cached_tokens": step.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": step.reasoning_tokens},
    }


def chat_completion(step: Reply, body: Mapping[str, Any]) -> dict[str, Any]:
    """A non-streaming Chat Completions answer for ``step``."""
    message: dict[str, Any] = {"role": "assistant", "content": step.text or None}
    if step.tool_calls:
        message["tool_calls"] = [
            {
                "id": _new_id("call"),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in step.tool_calls
        ]
    return {
        "id": _new_id("chatcmpl"),
        "object": "chat.completion",
        "model": step.model or body.get("model", "gpt-4o"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if step.tool_calls else "stop",
            }
        ],
        "usage": _chat_usage(step),
    }


def chat_chunks(step: Reply, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The streamed Chat Completions chunks for ``step``.

    Text comes in two deltas; each tool call's arguments come in three pieces after a
    first chunk carrying its id and name, as real servers split them. Usage comes in a
    last chunk with no choices (what ``stream_options.include_usage`` asks for).
    """
    model = step.model or body.get("model", "gpt-4o")
    chunk_id = _new_id("chatcmpl")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    if step.text:
        half = len(step.text) // 2
        chunks += [chunk({"content": step.text[:half]}), chunk({"content": step.text[half:]})]
    for index, call in enumerate(step.tool_calls):
        head = {
            "index": index,
            "id": _new_id("call"),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        chunks.append(chunk({"tool_calls": [head]}))
        arguments = call.arguments
        third = max(1, len(arguments) // 3)
        pieces = [arguments[:third], arguments[third : 2 * third], arguments[2 * third :]]
        for piece in pieces:
            chunks.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            )
    chunks.append(chunk({}, "tool_calls" if step.tool_calls else "stop"))
    chunks.append(
        {"id": chunk_id, "object": "chat.completion.chunk", "model": model, "choices": [],
         "usage": _chat_usage(step)}
    )  # fmt: skip
    return chunks


def _gemini_usage(step: Reply) -> dict[str, Any]:
    prompt = step.input_tokens
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": step.output_tokens,
        "cachedContentTokenCount": step.cache_read_tokens,
        "thoughtsTokenCount": step.reasoning_tokens,
        "totalTokenCount": prompt + step.output_tokens + step.reasoning_tokens,
    }


def gemini_response(step: Reply, model: str) -> dict[str, Any]:
    """A non-streaming Gemini ``generateContent`` answer for ``step``."""
    parts: list[dict[str, Any]] = []
    if step.text:
        parts.append({"text": step.text})
    for call in step.tool_calls:
        parts.append({"functionCall": {"name": call.name, "args": dict(call.input)}})
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": _gemini_usage(step),
        "modelVersion": step.model or model,
        "responseId": _new_id("resp"),
    }


def gemini_chunks(step: Reply, model: str) -> list[dict[str, Any]]:
    """The ``streamGenerateContent?alt=sse`` chunks for ``step`` (usage on the last)."""
    whole = gemini_response(step, model)
    parts = whole["candidates"][0]["content"]["parts"]
    if not parts:
        return [whole]
    chunks = []
    for number, part in enumerate(parts):
        last = number == len(parts) - 1
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0}
        if last:
            candidate["finishReason"] = "STOP"
        chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": whole["modelVersion"]}
        if last:
            chunk["usageMetadata"] = whole["usageMetadata"]
        chunks.append(chunk)
    return chunks


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
