"""Semantic records: which events yield which records, and how records are filtered."""

from __future__ import annotations

import json

import pytest

from loops import errors, semantic_records_from_event
from loops.flow.events import Event, EventType
from loops.runs import records
from loops.runs.records import RecordFilter, RecordKind


def _event(type_: str, path: str, ts: str = "2026-11-27T10:00:00.000Z", **data: object) -> dict:
    return {"type": type_, "ts": ts, "run_id": "r1", "path": path, **data}


def test_job_start_and_finish_are_dispatch_and_completion():
    start = Event(EventType.JOB_STARTED, "2026-11-27T10:00:00.000Z", "r1", "ship/impl",
                  {"kind": "loop", "name": "impl"})  # fmt: skip
    [dispatch] = semantic_records_from_event(start)
    assert dispatch.kind is RecordKind.DISPATCH
    assert (dispatch.path, dispatch.run_id) == ("ship/impl", "r1")
    assert dispatch.data["job_kind"] == "loop"
    finished = {"kind": "loop", "name": "impl", "status": "fail", "summary": "max reached"}
    [done] = semantic_records_from_event(_event("job.finished", "ship/impl", **finished))
    assert done.to_dict()["status"] == "fail" and done.to_dict()["summary"] == "max reached"


def test_surfacing_and_revision_events_become_their_records():
    [surfaced] = semantic_records_from_event(
        _event("surfacing", "ship", source="review", severity="should-fix", reason="no tests")
    )
    assert surfaced.kind is RecordKind.SURFACING
    assert (surfaced.data["severity"], surfaced.data["reason"]) == ("should-fix", "no tests")
    [emitted] = semantic_records_from_event(
        _event("revision.emitted", "ship/review", source="review", target="impl", reason="x")
    )
    assert emitted.kind is RecordKind.REVISION_EMITTED and emitted.data["target"] == "impl"
    [routed] = semantic_records_from_event(
        _event("revision.routed", "ship", target="impl", accepted=False, reason="max reached")
    )
    assert routed.kind is RecordKind.REVISION_ROUTED and routed.data["accepted"] is False


def test_a_review_verdict_itself_is_no_record():
    # a failing review emits its own surfacing and revision events; the verdict is not one
    assert semantic_records_from_event(_event("review", "ship", met=False, reason="no")) == []


def test_other_and_unknown_events_yield_nothing():
    assert semantic_records_from_event(_event("agent.text", "a", text="hi")) == []
    assert semantic_records_from_event(_event("something.new", "a")) == []


def test_node_skipped_is_a_completion_with_status_skipped():
    [rec] = semantic_records_from_event(_event("node.skipped", "d/n", node="n", reason="needs x"))
    assert rec.kind is RecordKind.COMPLETION and rec.data["status"] == "skipped"


def test_record_round_trips_through_its_line():
    [rec] = semantic_records_from_event(_event("job.started", "é/x", kind="fn", name="x"))
    line = records.record_line(rec)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert records.SemanticRecord.from_dict(json.loads(line)) == rec


def _lines() -> list[str]:
    events = [
        _event("job.started", "ship", "2026-11-27T10:00:00.000Z", kind="dag", name="ship"),
        _event("job.started", "ship/impl", "2026-11-27T10:00:01.000Z", kind="loop", name="impl"),
        _event("job.started", "ship/implement", "2026-11-27T10:00:02.000Z", kind="fn"),
        _event("surfacing", "ship/impl", "2026-11-27T10:00:03.000Z", severity="block"),
        _event("revision.emitted", "ship/impl", "2026-11-27T10:00:04.000Z", target="impl"),
        _event("revision.routed", "ship", "2026-11-27T10:00:05.000Z", target="impl"),
        _event("job.finished", "ship/impl", "2026-11-27T10:00:06.000Z", kind="loop", status="pass"),
    ]
    return [records.record_line(r) for e in events for r in semantic_records_from_event(e)]


def _select(**options: object) -> list[tuple[str, str]]:
    return [(r["kind"], r["path"]) for r in RecordFilter(**options).select(_lines())]  # type: ignore[arg-type]


def test_filter_by_kind_with_the_revision_alias():
    assert _select(kinds=records.parse_kinds(["revision"])) == [
        ("revision-emitted", "ship/impl"),
        ("revision-routed", "ship"),
    ]
    both = records.parse_kinds(["surfacing,completion"])
    assert _select(kinds=both) == [("surfacing", "ship/impl"), ("completion", "ship/impl")]


def test_filter_by_path_prefix_is_segment_wise():
    assert [p for _, p in _select(path="ship/impl")] == ["ship/impl"] * 4
    assert len(_select(path="/ship/")) == 7


def test_filter_by_since_and_last():
    since = records.parse_since("2026-11-27T10:00:04Z")
    assert _select(since=since) == [
        ("revision-emitted", "ship/impl"),
        ("revision-routed", "ship"),
        ("completion", "ship/impl"),
    ]
    assert _select(last=2) == [("revision-routed", "ship"), ("completion", "ship/impl")]
    assert _select(last=0) == []
    assert _select(kinds=records.parse_kinds(["dispatch"]), last=1) == [
        ("dispatch", "ship/implement")
    ]


def test_since_accepts_dates_and_offsets():
    assert records.parse_since("2026-11-27") == "2026-11-27T00:00:00.000Z"
    assert records.parse_since("2026-11-27T12:00:00+02:00") == "2026-11-27T10:00:00.000Z"


def test_bad_filters_are_input_errors():
    with pytest.raises(errors.InputError, match="unknown record kind 'nope'"):
        records.parse_kinds(["nope"])
    with pytest.raises(errors.InputError, match="ISO 8601"):
        records.parse_since("last tuesday")
    with pytest.raises(errors.InputError, match="--last"):
        RecordFilter(last=-1)
    assert records.parse_kinds([]) is None


def test_broken_and_blank_lines_are_skipped():
    lines = ["", "{not json", *_lines()]
    assert len(RecordFilter().select(lines)) == 7


def test_lines_in_another_key_order_are_filtered_the_same():
    reordered = [json.dumps(json.loads(line), sort_keys=True) for line in _lines()]
    for options in (
        {"kinds": records.parse_kinds(["revision"])},
        {"path": "ship/impl"},
        {"since": records.parse_since("2026-11-27T10:00:04Z")},
        {"kinds": records.parse_kinds(["dispatch"]), "path": "ship", "last": 2},
    ):
        selection = RecordFilter(**options)  # type: ignore[arg-type]
        assert selection.select(reordered) == selection.select(_lines())
        assert selection.select(_lines())
