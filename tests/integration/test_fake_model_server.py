"""The scripted fake model server speaks both streaming formats and follows its script."""

from __future__ import annotations

import json

import httpx
import pytest

from fakes.model_server import Failure, FakeModelServer, Hang, Reply, ToolCall


def _sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_anthropic_stream_text_and_tool_call_then_default():
    script = [Reply(text="hi", tool_calls=[ToolCall("Bash", {"command": "ls"})], input_tokens=7)]
    with FakeModelServer(script, default=Reply(text="fallback")) as server:
        body = {"model": "claude-x", "stream": True, "messages": []}
        first = httpx.post(f"{server.url}/v1/messages", json=body)
        second = httpx.post(f"{server.url}/v1/messages", json=body)
    events = _sse(first.text)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert events[0][1]["message"]["usage"]["input_tokens"] == 7
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert deltas[0] == {"type": "text_delta", "text": "hi"}
    assert json.loads(deltas[1]["partial_json"]) == {"command": "ls"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert "fallback" in second.text
    assert [r.body["model"] for r in server.model_requests()] == ["claude-x", "claude-x"]


def test_responses_stream_with_usage_and_function_call():
    script = [
        Reply(
            text="ok",
            tool_calls=[ToolCall("exec_command", {"cmd": "ls"})],
            input_tokens=50,
            cache_read_tokens=20,
            output_tokens=5,
        )
    ]
    with FakeModelServer(script) as server:
        response = httpx.post(f"{server.url}/v1/responses", json={"model": "gpt-5"})
    events = _sse(response.text)
    assert events[0][0] == "response.created" and events[-1][0] == "response.completed"
    completed = events[-1][1]["response"]
    assert completed["usage"]["input_tokens_details"]["cached_tokens"] == 20
    call = completed["output"][1]
    assert call["type"] == "function_call" and json.loads(call["arguments"]) == {"cmd": "ls"}


def test_failures_carry_status_error_body_and_retry_after():
    with FakeModelServer([Failure(429, "slow down", retry_after_s=3), Failure(401, "bad")]) as s:
        limited = httpx.post(f"{s.url}/v1/messages", json={"stream": True})
        denied = httpx.post(f"{s.url}/v1/responses", json={})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"


def test_hang_and_stall_hold_the_request_until_the_server_stops():
    with FakeModelServer([Hang(), Reply(text="x", stall_after_first_event=True)]) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/messages", json={"stream": True}, timeout=0.3)
        with httpx.stream("POST", f"{server.url}/v1/responses", json={}, timeout=0.3) as stream:
            assert stream.status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                stream.read()
