"""Stream parsing and classification details: usage arithmetic, retry signals, tables."""

from __future__ import annotations

import pytest

from loops import errors
from loops.engines import base, process, stream
from loops.engines.claude import ClaudeStreamParser, result_usage
from loops.engines.codex import CodexStreamParser
from loops.usage import Usage


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("Rate limit reached. Please try again in 20s.", 20.0),
        ("try again in 1.5 seconds", 1.5),
        ("please retry after 2 minutes", 120.0),
        ("Try again in 250ms", 0.25),
        ("usage limit; try again in 3 hours", 10800.0),
        ("rate limited", None),
    ],
)
def test_retry_after_from_text(text, seconds):
    assert stream.retry_after_from_text(text) == seconds


def test_classify_first_matching_rule_wins_and_carries_hint_and_retry_after():
    rules = (
        stream.Rule(r"401", errors.EngineAuthError, "log in"),
        stream.Rule(r"429|rate", errors.EngineRateLimited),
    )
    auth = stream.classify(rules, "HTTP 401 and rate", prefix="x")
    assert isinstance(auth, errors.EngineAuthError)
    assert auth.message == "x: HTTP 401 and rate (log in)"
    limited = stream.classify(rules, "429: try again in 4s", prefix="x")
    assert isinstance(limited, errors.EngineRateLimited) and limited.retry_after_s == 4
    assert stream.classify(rules, "fine", prefix="x") is None


def test_parse_json_line_never_raises():
    assert process.parse_json_line('{"a": 1}\n') == {"a": 1}
    for junk in ["", "  ", "nope", "{", "[1]", '"s"', '{"a": }', "\x00"]:
        assert process.parse_json_line(junk) is None


def test_process_exit_signal_names():
    def exit_(code):
        return process.ProcessExit(code, False, False, "", 0.0)

    assert exit_(-15).signal_name == "SIGTERM"
    assert exit_(143).signal_name == "SIGTERM"
    assert exit_(130).signal_name == "SIGINT"
    assert exit_(1).signal_name is None
    assert process.ProcessExit(1, False, False, "a\nlast line\n\n", 0).stderr_last_line() == (
        "last line"
    )


def test_claude_usage_prefers_model_usage_and_counts_cache_as_input():
    result = {
        "total_cost_usd": 0.5,
        "usage": {"input_tokens": 1, "output_tokens": 1},
        "modelUsage": {
            "a": {
                "inputTokens": 100,
                "outputTokens": 10,
                "cacheReadInputTokens": 1000,
                "cacheCreationInputTokens": 50,
                "costUSD": 0.3,
            },
            "b": {"inputTokens": 20, "outputTokens": 5, "costUSD": 0.2},
        },
    }
    assert result_usage(result) == Usage(1170, 15, 1000, 0.5)


def test_claude_usage_uses_the_per_result_delta_when_the_cli_gives_one():
    result = {
        "total_cost_usd": 9.0,  # cumulative over a resumed session in newer CLIs
        "modelUsage": {"a": {"inputTokens": 9999, "outputTokens": 999, "costUSD": 9.0}},
        "model_usage_since_last_result": {
            "a": {"inputTokens": 10, "outputTokens": 2, "costUSD": 0.01}
        },
    }
    assert result_usage(result) == Usage(10, 2, 0, 0.01)


def test_claude_usage_falls_back_to_usage_and_none_without_any():
    assert result_usage(
        {"usage": {"input_tokens": 5, "cache_read_input_tokens": 7, "output_tokens": 2}}
    ) == Usage(12, 2, 7, None)
    assert result_usage({}) is None


def _retry(status, error, **extra):
    return {
        "type": "system",
        "subtype": "api_retry",
        "error_status": status,
        "error": error,
        **extra,
    }


def test_claude_retry_signals_stop_on_auth_and_rate_limit_at_once():
    parser = ClaudeStreamParser()
    parser.feed(_retry(401, "authentication_failed"))
    assert isinstance(parser.stop_error, errors.EngineAuthError)
    parser = ClaudeStreamParser()
    parser.feed(_retry(429, "rate_limit", retry_delay_ms=1500))
    assert isinstance(parser.stop_error, errors.EngineRateLimited)
    assert parser.stop_error.retry_after_s == 1.5


def test_claude_network_retries_stop_after_the_configured_count():
    parser = ClaudeStreamParser(network_retries=2)
    parser.feed(_retry(None, "unknown"))
    assert parser.stop_error is None
    parser.feed(_retry(None, "unknown"))
    assert isinstance(parser.stop_error, errors.EngineNetworkError)


def test_claude_server_errors_are_left_to_the_tools_own_retries():
    parser = ClaudeStreamParser()
    parser.feed(_retry(500, "server_error"))
    parser.feed(_retry(529, "overloaded"))  # overloaded counts as a rate limit
    assert isinstance(parser.stop_error, errors.EngineRateLimited)


def test_claude_subagent_messages_are_not_the_agents_own_text():
    parser = ClaudeStreamParser()
    events = parser.feed(
        {
            "type": "assistant",
            "parent_tool_use_id": "toolu_1",
            "message": {"content": [{"type": "text", "text": "sub-agent chatter"}]},
        }
    )
    assert events == []


def test_codex_reconnect_reasons():
    parser = CodexStreamParser(network_retries=3)
    parser.feed(
        {"type": "error", "message": "Reconnecting... 1/5 (stream disconnected before completion)"}
    )
    parser.feed({"type": "error", "message": "Model metadata for `x` not found"})
    assert parser.stop_error is None and parser.warnings
    parser.feed(
        {"type": "error", "message": "Reconnecting... 2/5 (unexpected status 401 Unauthorized)"}
    )
    assert isinstance(parser.stop_error, errors.EngineAuthError)
    parser = CodexStreamParser()
    parser.feed(
        {"type": "error", "message": "Reconnecting... waiting for network (Connection failed)"}
    )
    assert isinstance(parser.stop_error, errors.EngineNetworkError)


async def test_codex_turn_usage_is_the_delta_from_the_thread_baseline():
    async def price(usage: Usage, model: str | None) -> float | None:
        return usage.total_tokens / 1000

    parser = CodexStreamParser(baseline=Usage(10000, 80, 6000), model="m", price=price)
    parser.feed({"type": "thread.started", "thread_id": "t"})
    events = parser.feed(
        {
            "type": "turn.completed",
            "usage": {"input_tokens": 15000, "cached_input_tokens": 9000, "output_tokens": 120},
        }
    )
    assert events == [base.UsageReport(Usage(5000, 40, 3000))]
    result = await parser.finish(process.ProcessExit(0, False, False, "", 1.0))
    assert result.ok and result.usage == Usage(5000, 40, 3000, 5.04)
    assert result.session_usage == Usage(15000, 120, 9000)


async def test_codex_turn_failed_is_classified_and_keeps_the_thread_id():
    parser = CodexStreamParser()
    parser.feed({"type": "thread.started", "thread_id": "t"})
    parser.feed(
        {
            "type": "turn.failed",
            "error": {"message": "You've hit your usage limit. Try again in 2 hours."},
        }
    )
    result = await parser.finish(process.ProcessExit(1, False, False, "", 1.0))
    assert isinstance(result.error, errors.EngineRateLimited)
    assert result.error.retry_after_s == 7200
    assert result.session_id == "t"


def test_events_have_one_json_form():
    import json

    result = base.TurnResult(
        status=base.TurnStatus.ERROR,
        usage=Usage(3, 1, 0, 0.5),
        error=errors.EngineRateLimited("slow down", retry_after_s=2),
    )
    data = base.event_to_dict(result)
    assert data["type"] == "result" and data["status"] == "error"
    assert data["usage"] == {
        "input_tokens": 3,
        "output_tokens": 1,
        "cached_input_tokens": 0,
        "cost_usd": 0.5,
    }
    assert data["error"] == {
        "code": "engine_rate_limited",
        "message": "slow down",
        "retry_after_s": 2,
    }
    assert base.event_to_dict(base.ToolUse(id="t", name="Bash", input={"a": 1})) == {
        "type": "tool_use",
        "id": "t",
        "name": "Bash",
        "input": {"a": 1},
    }
    json.dumps(data)
