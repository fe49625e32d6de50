"""Dense parsing logic of the newer engines, unit by unit (no I/O)."""

from __future__ import annotations

import email.utils
import time

import pytest

from loops import errors
from loops.engines import base, claude, codex, gemini, openai, opencode


def test_retry_after_reads_seconds_milliseconds_and_http_dates():
    assert openai.retry_after({"retry-after": "7"}) == 7.0
    assert openai.retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    future = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert openai.retry_after({"retry-after": future}) == pytest.approx(120, abs=2)
    assert openai.retry_after({"retry-after": "soon"}) is None
    assert openai.retry_after({}) is None


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (401, errors.EngineAuthError),
        (403, errors.EngineAuthError),
        (429, errors.EngineRateLimited),
        (404, errors.EngineApiError),
        (400, errors.EngineApiError),
        (503, errors.EngineApiError),
    ],
)
def test_http_errors_are_classified_with_the_servers_message(status, error_class):
    error = openai.http_error(status, {"retry-after": "3"}, '{"error": {"message": "nope"}}')
    assert type(error) is error_class
    assert f"HTTP {status}: nope" in error.message
    if status == 429:
        assert isinstance(error, errors.EngineRateLimited) and error.retry_after_s == 3.0
    plain = openai.http_error(status, {}, "<html>gateway down</html>")
    assert "gateway down" in plain.message


async def test_streamed_tool_calls_are_put_together_by_index():
    chunks = [
        '{"choices": [{"delta": {"tool_calls": [{"index": 1, "id": "b", "function": '
        '{"name": "list_dir", "arguments": ""}}]}}]}',
        '{"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "a", "function": '
        '{"name": "read_", "arguments": "{\\"pa"}}]}}]}',
        '{"choices": [{"delta": {"tool_calls": [{"index": 0, "function": '
        '{"name": "file", "arguments": "th\\": \\"x\\"}"}}]}}]}',
        '{"choices": [{"delta": {"tool_calls": [{"index": 1, "function": '
        '{"arguments": {"recursive": true}}}]}}]}',
        "not json at all",
        '{"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, '
        '"prompt_tokens_details": {"cached_tokens": 4}}}',
    ]

    async def lines():
        for chunk in chunks:
            yield f"data: {chunk}"
        yield "data: [DONE]"
        yield 'data: {"choices": [{"delta": {"content": "after done"}}]}'

    events: list[base.TurnEvent] = []
    answer = await openai.read_stream(lines(), events.append)
    assert [(c.id, c.name, c.arguments) for c in answer.calls] == [
        ("a", "read_file", '{"path": "x"}'),
        ("b", "list_dir", '{"recursive": true}'),
    ]
    assert (answer.usage.input_tokens, answer.usage.cached_input_tokens) == (9, 4)
    assert answer.text == "" and events == []


def test_gemini_thinking_tokens_are_billed_as_output():
    stats = {"input_tokens": 2500, "output_tokens": 25, "total_tokens": 2540, "cached": 500}
    usage = gemini.stats_usage(stats)
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (2500, 40, 500)
    assert gemini.stats_usage("nope") is None


def test_gemini_stderr_signals():
    parser = gemini.GeminiStreamParser(network_retries=2)
    parser.feed_stderr("Ripgrep is not available.")
    parser.feed_stderr("Attempt 1 failed. Retrying with backoff... fetch failed")
    assert parser.stop_error is None
    parser.feed_stderr("Attempt 2 failed. Retrying with backoff... fetch failed")
    assert isinstance(parser.stop_error, errors.EngineNetworkError)
    auth = gemini.GeminiStreamParser()
    auth.feed_stderr("Attempt 1 failed with status 401. Retrying with backoff...")
    assert isinstance(auth.stop_error, errors.EngineAuthError)


def test_opencode_error_events_are_classified():
    def event(message: str, status: int | None = None, **data: object) -> dict[str, object]:
        body: dict[str, object] = {"message": message, **data}
        if status is not None:
            body["statusCode"] = status
        return {"type": "error", "error": {"name": "APIError", "data": body}}

    cases = [
        (event("Incorrect API key provided", 401), errors.EngineAuthError),
        (event("slow down", 429, responseHeaders={"retry-after": "4"}), errors.EngineRateLimited),
        (event("Cannot connect to API: Unable to connect."), errors.EngineNetworkError),
        (event("Model not found: x/y"), errors.EngineApiError),
    ]
    for raw, error_class in cases:
        parser = opencode.OpenCodeStreamParser()
        parser.feed(raw)
        assert parser.error_event is raw
        error = opencode._event_error(raw)
        assert type(error) is error_class, (raw, error)
    limited = opencode._event_error(cases[1][0])
    assert isinstance(limited, errors.EngineRateLimited) and limited.retry_after_s == 4.0


def test_event_dicts_round_trip():
    events: list[base.TurnEvent] = [
        base.AgentText("hi"),
        base.ToolUse("1", "bash", {"command": "ls"}),
        base.ToolResult("1", "out", is_error=True),
        base.Notice("engine.fallback", "moved", {"to": "b"}),
        base.SessionStarted("s"),
        base.TurnResult(
            status=base.TurnStatus.ERROR,
            error=errors.EngineRateLimited("slow", retry_after_s=2.0),
            session_id="s",
        ),
    ]
    for event in events:
        back = base.event_from_dict(base.event_to_dict(event))
        assert base.event_to_dict(back) == base.event_to_dict(event)
    with pytest.raises(errors.InputError, match="unknown event type"):
        base.event_from_dict({"type": "bogus"})


async def test_gemini_cancelled_result_is_an_interruption():
    from loops.engines import process

    parser = gemini.GeminiStreamParser(model="gemini-2.5-flash")
    parser.feed(
        {
            "type": "result",
            "status": "error",
            "error": {"type": "FatalCancellationError", "message": "Operation cancelled."},
            "stats": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        }
    )
    exit = process.ProcessExit(
        returncode=130, timed_out=False, stopped=False, stderr_tail="", duration_s=1.0
    )
    result = await parser.finish(exit)
    assert result.status is base.TurnStatus.INTERRUPTED
    assert isinstance(result.error, errors.EngineCrashed)


def test_claude_and_codex_name_the_session_as_soon_as_their_stream_does():
    """So a turn killed mid-way can be resumed (recorded lines, agent-clis.md 1.4, 2.3)."""
    parser = claude.ClaudeStreamParser()
    init = {"type": "system", "subtype": "init", "session_id": "177b"}
    assert parser.feed(init) == [base.SessionStarted("177b")]
    text = {
        "type": "assistant",
        "session_id": "177b",
        "message": {"content": [{"type": "text", "text": "hi"}]},
    }
    assert not any(isinstance(e, base.SessionStarted) for e in parser.feed(text))
    threads = codex.CodexStreamParser()
    started = {"type": "thread.started", "thread_id": "0199a"}
    assert threads.feed(started) == [base.SessionStarted("0199a")]
