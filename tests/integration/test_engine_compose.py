"""Composing engines: fallbacks on rate limits, a USD cap across engines, record and replay."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

import loops
from fakes.model_server import FakeModelServer, Reply, ToolCall
from loops import errors
from loops.engines import base, compose, create_engine
from loops.engines.fallback import FallbackEngine, FallbackPolicy
from loops.engines.mock import MockEngine, MockTurn
from loops.engines.openai import OpenAIEngine, OpenAIOptions
from loops.engines.policy import RateLimitPolicy
from loops.engines.recording import RecordingEngine
from loops.engines.replay import ReplayEngine
from loops.flow.events import EventType, MemorySink
from loops.usage import Usage

FAKE_AGENT = Path(__file__).resolve().parents[1] / "fakes" / "fake_agent.py"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"


def limited(cost: float = 0.01, retry_after_s: float | None = None) -> MockTurn:
    return MockTurn(
        text="",
        error="rate_limit",
        retry_after_s=retry_after_s,
        usage=Usage(input_tokens=10, output_tokens=1, cost_usd=cost),
    )


def ok(text: str, cost: float = 0.02) -> MockTurn:
    return MockTurn(text=text, usage=Usage(input_tokens=100, output_tokens=10, cost_usd=cost))


async def run(
    engine: base.Engine, cwd: Path, **fields: Any
) -> tuple[list[base.TurnEvent], base.TurnResult]:
    events: list[base.TurnEvent] = []
    request = base.TurnRequest(prompt=fields.pop("prompt", "Do it."), cwd=cwd, **fields)
    result = await base.run_turn(engine, request, on_event=events.append)
    return events, result


def notices(events: list[base.TurnEvent]) -> list[base.Notice]:
    return [e for e in events if isinstance(e, base.Notice)]


# --- fallbacks ------------------------------------------------------------------------


async def test_rate_limit_moves_the_turn_to_the_next_engine(tmp_path: Path):
    primary = MockEngine([limited(0.01)], name="claude")
    second = MockEngine([limited(0.005)], name="codex")
    third = MockEngine([ok("done by gemini")], name="gemini")
    policy = FallbackPolicy(models={"codex": "gpt-5", "gemini": "gemini-2.5-flash"})
    engine = FallbackEngine(primary, [second, third], policy)
    events, result = await run(engine, tmp_path, model="claude-sonnet-4-5")
    assert result.ok and result.final_text == "done by gemini"
    moves = [(n.data["from"], n.data["to"]) for n in notices(events) if n.code == "engine.fallback"]
    assert moves == [("claude", "codex"), ("codex", "gemini")]
    # Each engine got its own model; the rate-limited attempts' spend is kept.
    assert [r.model for r in (*primary.requests, *second.requests, *third.requests)] == [
        "claude-sonnet-4-5",
        "gpt-5",
        "gemini-2.5-flash",
    ]
    assert result.usage.cost_usd == pytest.approx(0.035)
    assert result.usage.input_tokens == 120
    assert engine.spent_usd == pytest.approx(0.035)
    assert engine.name == "claude+codex+gemini"


async def test_when_every_engine_is_limited_the_rate_limit_is_returned(tmp_path: Path):
    engine = FallbackEngine(
        MockEngine([limited(retry_after_s=7)], name="a"), [MockEngine([limited()], name="b")]
    )
    _, result = await run(engine, tmp_path)
    assert isinstance(result.error, errors.EngineRateLimited)
    assert result.usage.cost_usd == pytest.approx(0.02)


async def test_wait_mode_waits_on_the_same_engine_then_falls_back(tmp_path: Path):
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    primary = MockEngine([limited(retry_after_s=4), limited(retry_after_s=5), ok("late")])
    policy = FallbackPolicy(on_limit="wait", rate_limits=RateLimitPolicy(max_retries=1))
    fallback = MockEngine([ok("from b")], name="b")
    engine = FallbackEngine(primary, [fallback], policy, sleep=sleep)
    events, result = await run(engine, tmp_path)
    assert waits == [4.0]  # one wait allowed, then the policy gives up and it moves on
    assert result.final_text == "from b"
    assert [n.code for n in notices(events)] == ["engine.rate_limit_wait", "engine.fallback"]


async def test_usd_cap_holds_across_engines_and_turns(tmp_path: Path):
    primary = MockEngine([limited(0.02), ok("one", 0.02), ok("never")], name="a")
    fallback = MockEngine([ok("from b", 0.03)], name="b")
    engine = FallbackEngine(primary, [fallback], FallbackPolicy(max_usd=0.06))
    _, first = await run(engine, tmp_path)  # 0.02 on a (limited) + 0.03 on b
    _, second = await run(engine, tmp_path)  # 0.01 left: it may start, and spends 0.02
    events, third = await run(engine, tmp_path)
    assert first.final_text == "from b" and second.final_text == "one"
    assert isinstance(third.error, errors.EngineBudgetExceeded)
    assert "0.06" in third.error.message
    assert [n.code for n in notices(events)] == ["engine.budget"]
    assert len(primary.requests) == 2


async def test_a_session_stays_with_the_engine_that_owns_it(tmp_path: Path):
    primary = MockEngine([limited(), ok("a again")], name="a")
    fallback = MockEngine([ok("b first"), ok("b second")], name="b")
    engine = FallbackEngine(primary, [fallback])
    _, first = await run(engine, tmp_path, resume_session_id=None)
    _, second = await run(engine, tmp_path, resume_session_id=first.session_id)
    assert second.final_text == "b second"
    assert fallback.requests[1].resume_session_id == first.session_id
    assert len(primary.requests) == 1
    # A session of another tool is not handed to an engine that does not own it.
    _, third = await run(engine, tmp_path, resume_session_id="unknown-session")
    assert third.final_text == "a again"


async def test_fallback_from_names_through_the_registry(tmp_path: Path):
    engine = create_engine(
        "fallback",
        engines="mock,command",
        options={"mock": {"turns": [{"error": "rate_limit"}]}, "command": {"argv": ["cat"]}},
    )
    _, result = await run(engine, tmp_path, prompt="echo me")
    assert result.ok and result.final_text == "echo me"
    with pytest.raises(errors.ConfigError, match="distinct"):
        create_engine("fallback", engines=["mock", "mock"])
    with pytest.raises(errors.ConfigError, match="unknown engine"):
        create_engine("fallback", engines=["mock", "nope"])


async def test_fallback_notices_land_in_the_run_events(tmp_path: Path):
    engine = FallbackEngine(MockEngine([limited()], name="a"), [MockEngine([ok("b")], name="b")])
    sink = MemorySink()
    result = await loops.run(loops.agent_job("Do it.", engine=engine), cwd=tmp_path, sinks=[sink])
    assert result.outcome.status.value == "pass"
    notice = next(e for e in sink.events if e.type is EventType.AGENT_NOTICE)
    assert notice.data["code"] == "engine.fallback" and notice.data["data"]["to"] == "b"


# --- record and replay ----------------------------------------------------------------


async def test_record_then_replay_a_run_offline_with_its_file_edits(tmp_path: Path):
    record = tmp_path / "rec"
    work = tmp_path / "work"
    work.mkdir()
    (work / "old.txt").write_text("to delete")
    scripted = MockEngine(
        [
            MockTurn(text="wrote it", edits={"src/app.py": "print(1)\n", "old.txt": None}),
            MockTurn(text='{"met": true, "confidence": 1, "reason": "ok"}'),
        ]
    )
    job = loops.loop(
        name="l",
        body=loops.agent_job("Write the app.", engine="x"),
        until=loops.agent_check("Is the app written?", engine="x"),
        max=2,
    )
    sink = MemorySink()
    recorded = await loops.run(
        job, cwd=work, sinks=[sink], engine=compose(scripted, record_dir=record), force_engine=True
    )
    assert recorded.outcome.status.value == "pass"
    assert sorted(p.name for p in record.iterdir()) == [
        "turn-0001.files.json",
        "turn-0001.jsonl",
        "turn-0001.raw",
        "turn-0002.files.json",
        "turn-0002.jsonl",
        "turn-0002.raw",
    ]
    files = json.loads((record / "turn-0001.files.json").read_text())
    assert files == {"written": {"src/app.py": {"text": "print(1)\n"}}, "deleted": ["old.txt"]}

    # Replay in a fresh directory: the same events, and the agent's edits come back.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "old.txt").write_text("to delete")
    replay_sink = MemorySink()
    replayed = await loops.run(
        job, cwd=fresh, sinks=[replay_sink], engine=ReplayEngine(record), force_engine=True
    )
    assert replayed.outcome.status.value == "pass"
    assert (fresh / "src" / "app.py").read_text() == "print(1)\n"
    assert not (fresh / "old.txt").exists()

    def agent_events(events: list[loops.Event]) -> list[tuple[str, dict[str, Any]]]:
        return [(e.type.value, e.data) for e in events if e.type.value.startswith("agent.")]

    assert agent_events(replay_sink.events) == agent_events(sink.events)


async def test_replay_that_runs_out_of_turns_stops_the_run_clearly(tmp_path: Path):
    record = tmp_path / "rec"
    recorder = RecordingEngine(MockEngine([ok("one")]), record)
    await run(recorder, tmp_path, prompt="first")
    job = loops.sequence(loops.agent_job("first"), loops.agent_job("second"))
    with pytest.raises(errors.ReplayDiverged, match=r"asked for turn 2 but .* recorded only 1"):
        await loops.run(job, cwd=tmp_path, engine=ReplayEngine(record, match="order"))


async def test_replay_with_a_changed_prompt_names_the_difference(tmp_path: Path):
    record = tmp_path / "rec"
    await run(RecordingEngine(MockEngine([ok("one")]), record), tmp_path, prompt="Fix bug 12.")
    with pytest.raises(errors.ReplayDiverged) as caught:
        await run(ReplayEngine(record), tmp_path, prompt="Fix bug 13.")
    assert "recorded 'Fix bug 12.', asked 'Fix bug 13.' (at character 9)" in caught.value.message
    # Matching by order ignores the prompt.
    _, result = await run(ReplayEngine(record, match="order"), tmp_path, prompt="Fix bug 13.")
    assert result.final_text == "one"


async def test_replay_matches_prompts_in_any_order(tmp_path: Path):
    record = tmp_path / "rec"
    recorder = RecordingEngine(
        MockEngine([MockTurn(text="A", match="^a$"), MockTurn(text="B", match="^b$")]), record
    )
    await run(recorder, tmp_path, prompt="a")
    await run(recorder, tmp_path, prompt="b")
    replay = ReplayEngine(record)
    _, second = await run(replay, tmp_path, prompt="b")
    _, first = await run(replay, tmp_path, prompt="a")
    assert (first.final_text, second.final_text) == ("A", "B")


async def test_recording_keeps_the_raw_stream_of_a_cli_agent(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "gemini"
    fake.write_text(f"#!{sys.executable}\n" + FAKE_AGENT.read_text())
    fake.chmod(0o755)
    fixture = FIXTURES / "gemini" / "success_tool.jsonl"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_AGENT_FIXTURE": str(fixture),
    }
    engine = compose(create_engine("gemini", env=env), record_dir=tmp_path / "rec")
    _, result = await run(engine, tmp_path)
    assert result.ok, result.error
    raw = (tmp_path / "rec" / "turn-0001.raw").read_text().splitlines()
    assert raw == fixture.read_text().splitlines()
    lines = (tmp_path / "rec" / "turn-0001.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[0]["type"] == "request" and records[0]["engine"] == "gemini"
    assert records[-1]["type"] == "result" and records[-1]["final_text"] == result.final_text
    _, replayed = await run(ReplayEngine(tmp_path / "rec"), tmp_path)
    assert replayed.final_text == result.final_text and replayed.usage == result.usage


async def test_recording_an_openai_turn_keeps_the_stream_payloads(tmp_path: Path):
    script = [
        Reply(tool_calls=[ToolCall("write_file", {"path": "a.txt", "content": "x"})]),
        Reply(text="done"),
    ]
    with FakeModelServer(script) as server:
        inner = OpenAIEngine(OpenAIOptions(base_url=f"{server.url}/v1", model="gpt-4o"))
        _, result = await run(RecordingEngine(inner, tmp_path / "rec"), tmp_path / ".")
    assert result.ok, result.error
    raw = (tmp_path / "rec" / "turn-0001.raw").read_text().splitlines()
    assert raw[-1] == "[DONE]" and any('"write_file"' in line for line in raw)
    replay_cwd = tmp_path / "replay"
    replay_cwd.mkdir()
    events, replayed = await run(ReplayEngine(tmp_path / "rec"), replay_cwd)
    assert replayed.final_text == "done"
    assert (replay_cwd / "a.txt").read_text() == "x"
    assert [e.name for e in events if isinstance(e, base.ToolUse)] == ["write_file"]


def test_replay_of_a_missing_or_empty_directory_is_a_config_error(tmp_path: Path):
    with pytest.raises(errors.ConfigError, match="not a directory"):
        ReplayEngine(tmp_path / "nope")
    with pytest.raises(errors.ConfigError, match="no recorded turns"):
        ReplayEngine(tmp_path)
    with pytest.raises(errors.ConfigError, match="dir="):
        create_engine("replay")


async def test_recorded_paths_outside_the_cwd_are_refused(tmp_path: Path):
    record = tmp_path / "rec"
    record.mkdir()
    (record / "turn-0001.jsonl").write_text(
        json.dumps({"type": "request", "prompt": "p", "engine": "x"})
        + "\n"
        + json.dumps({"type": "result", "status": "ok"})
        + "\n"
    )
    (record / "turn-0001.files.json").write_text(
        json.dumps({"written": {"../escape.txt": {"text": "x"}}, "deleted": []})
    )
    replay = ReplayEngine(record)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(errors.ReplayDiverged, match="outside"):
        await base.run_turn(replay, base.TurnRequest("p", cwd=work))
    assert not (tmp_path / "escape.txt").exists()
