"""The record's fold, bound and round trip (pure)."""

from __future__ import annotations

import pytest

from loops import errors
from loops.git import consolidate
from loops.git.commits import Commit, Trailer
from loops.git.consolidate import Record, RecordEntry


def entry(i: int) -> RecordEntry:
    return RecordEntry(
        date="2026-11-27",
        sha=f"{i:010d}",
        subject=f"decision {i}",
        decision=f"Chose approach {i}. More detail follows here.",
        reasons=(f"tests: met: {i} passed",),
    )


def test_render_and_parse_round_trip() -> None:
    record = Record(through="f" * 40, dropped=2, condensed=("- old line",), entries=(entry(1),))
    assert consolidate.parse_record(record.render()) == record


def test_fold_condenses_then_drops_the_oldest_to_stay_in_bound() -> None:
    record = consolidate.fold(Record(), [entry(i) for i in range(60)], through="a", max_chars=2000)
    text = record.render()
    assert len(text) <= 2000
    assert record.entries[-1].subject == "decision 59"  # the newest stay whole
    assert record.condensed and record.condensed[0].startswith("- 2026-11-27")
    assert "Chose approach" in record.condensed[-1] and "(why: tests: met" in record.condensed[-1]
    assert record.dropped > 0 and f"{record.dropped} oldest entries dropped" in text
    total = record.dropped + len(record.condensed) + len(record.entries)
    assert total == 60


def test_entry_for_a_milestone_keeps_decision_and_gate_reasons() -> None:
    commit = Commit(
        sha="1234567890abcdef",
        parents=(),
        author_name="a",
        author_email="a@x",
        authored_at_s=1_800_000_000,
        subject="feat: parser",
        body="Streams bodies.\n\nGates:\n- tests: met: 12 passed\n"
        "- review: met (confidence 0.90): ok",
        trailers=(Trailer("Loops-Run-Id", "r"),),
        files=(),
    )
    made = consolidate.entry_for(commit)
    assert made.decision == "Streams bodies."
    assert made.reasons == ("tests: met: 12 passed", "review: met (confidence 0.90): ok")
    assert made.sha == "1234567890" and made.date == "2027-01-15"


def test_a_foreign_record_file_is_refused() -> None:
    with pytest.raises(errors.InputError, match="loops-record"):
        consolidate.parse_record("# my own notes\n")
