"""The STEP marker parser: a table of edge cases."""

from __future__ import annotations

import pytest

from loops.queue.steps import StepMarker, StepStatus, parse_markers

D, F = StepStatus.DONE, StepStatus.FAILED


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "STEP[fetch_emails]: DONE idempotency=inbox-2026 note=Fetched 12 emails",
            [StepMarker("fetch_emails", D, "inbox-2026", "Fetched 12 emails")],
        ),
        (
            "STEP[reply]: FAILED idempotency=reply-abc note=Model refused",
            [StepMarker("reply", F, "reply-abc", "Model refused")],
        ),
        ("STEP[a]: DONE idempotency=k1", [StepMarker("a", D, "k1", "")]),
        ("STEP[a]: DONE", [StepMarker("a", D, "a", "")]),  # key defaults to the name
        ("STEP[a]: done idempotency=k", [StepMarker("a", D, "k", "")]),  # any case
        ("STEP[a]:DONE idempotency=k", [StepMarker("a", D, "k", "")]),  # no space
        ("STEP[a]: DONE note=just a note", [StepMarker("a", D, "a", "just a note")]),
        ("  - STEP[a]: DONE idempotency=k  ", [StepMarker("a", D, "k", "")]),  # prefix
        ("STEP[a]: DONE idempotency=k note=x\r\n", [StepMarker("a", D, "k", "x")]),
        ("STEP[ spaced name ]: DONE", [StepMarker("spaced name", D, "spaced name", "")]),
        (
            "STEP[a]: DONE idempotency=k note=has = and ] signs",
            [StepMarker("a", D, "k", "has = and ] signs")],
        ),
        # the last marker for one key wins
        (
            "STEP[a]: FAILED idempotency=k\nSTEP[a]: DONE idempotency=k note=2nd",
            [StepMarker("a", D, "k", "2nd")],
        ),
        (
            "STEP[a]: DONE idempotency=k1\nnoise\nSTEP[b]: FAILED idempotency=k2",
            [StepMarker("a", D, "k1", ""), StepMarker("b", F, "k2", "")],
        ),
        # malformed: ignored
        ("STEP[a]: MAYBE idempotency=k", []),
        ("STEP[]: DONE", []),
        ("STEP[   ]: DONE", []),
        ("STEP[a] DONE", []),
        ("STEP[a: DONE", []),
        ("STEP[a]: DONE and then some words", []),
        ("STEP[a]: DONEX", []),
        ("STEP[a]: DONE idempotency=", []),
        ("step[a]: DONE", [StepMarker("a", D, "a", "")]),
        ("STEP[" + "x" * 201 + "]: DONE", []),
        ("STEP[a\nb]: DONE", []),
        ("", []),
        ("no markers here", []),
    ],
)
def test_parse_markers(text: str, expected: list[StepMarker]) -> None:
    assert parse_markers(text) == expected


def test_note_is_truncated() -> None:
    (marker,) = parse_markers("STEP[a]: DONE note=" + "n" * 5000)
    assert len(marker.note) == 2000


def test_huge_output_without_markers_is_cheap_and_empty() -> None:
    assert parse_markers("x" * 1_000_000 + "\nSTEP[") == []
