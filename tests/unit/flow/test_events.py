"""The event stream: one schema, NDJSON and log sinks, run.finished last with a reason."""

from __future__ import annotations

import datetime as dt
import io
import json

from loops import EventType, Outcome, loop, predicate, run
from loops.flow.events import Emitter, Event, LogSink, MemorySink, NdjsonSink, describe_event


def test_every_event_type_has_a_log_rule_and_a_docstring():
    for member in EventType:
        event = Event(member, "2026-01-01T00:00:00.000Z", "r", "p", {"reason": "x"})
        describe_event(event)  # must not raise
        assert member.__doc__


def test_emitter_stamps_time_run_and_path():
    sink = MemorySink()
    moment = dt.datetime(2026, 11, 27, 15, 4, 5, 123456, tzinfo=dt.UTC)
    event = Emitter("run-1", [sink], clock=lambda: moment).emit(EventType.VERDICT, "a/b", met=True)
    assert event.to_dict() == {
        "type": "verdict",
        "ts": "2026-11-27T15:04:05.123Z",
        "run_id": "run-1",
        "path": "a/b",
        "met": True,
    }
    assert Event.from_dict(event.to_dict()) == event
    assert sink.events == [event]


async def test_ndjson_and_log_lines_for_a_run(tmp_path):
    out, log = io.StringIO(), io.StringIO()
    job = loop(
        name="l",
        body=lambda ctx: Outcome("pass", "did a thing"),
        until=predicate(lambda c, last: c.iteration == 2, name="twice"),
    )
    result = await run(job, cwd=tmp_path, sinks=[NdjsonSink(out), LogSink(log)])
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["type"] == "run.started" and lines[0]["shape"]["until"]["name"] == "twice"
    assert all({"type", "ts", "run_id", "path"} <= set(line) for line in lines)
    assert lines[-1]["type"] == "run.finished" and lines[-1]["status"] == "pass"
    assert lines[-1]["reason"] == result.reason != ""
    text = log.getvalue()
    assert "l  iteration 2/10" in text
    assert "until: not met by twice: twice returned False" in text
    assert text.splitlines()[-1].endswith(
        "run finished: pass: until met at iteration 2: twice: twice returned True"
    )
