"""The public face of ``loops`` is a decision: this test pins it."""

from __future__ import annotations

import loops

EXPECTED = [
    "list_runs",
    "read_run_status",
    "run_events_path",
    "run_semantic_records_path",
    "semantic_records_from_event",
    "Budget",
    "Finding",
    "Condition",
    "Context",
    "Event",
    "EventSink",
    "EventType",
    "Job",
    "Outcome",
    "OutcomeStatus",
    "RevisionRequest",
    "RunResult",
    "Verdict",
    "agent_check",
    "agent_job",
    "all_of",
    "any_of",
    "budget",
    "command_succeeds",
    "consolidate_job",
    "dag",
    "define_agent",
    "define_job",
    "define_skill",
    "from_file",
    "kickback",
    "review_context",
    "review_panel",
    "revision_request",
    "fn_job",
    "gate_job",
    "human_gate",
    "isolated",
    "loop",
    "parallel",
    "predicate",
    "quorum",
    "run",
    "sequence",
    "unchanged",
]


def test_all_is_pinned():
    assert sorted(loops.__all__) == sorted(EXPECTED)
    for name in loops.__all__:
        assert getattr(loops, name) is not None


def test_outcome_accepts_status_strings():
    assert loops.Outcome("fail", summary="x").status is loops.OutcomeStatus.FAIL
    assert loops.Outcome(loops.OutcomeStatus.PASS).ok
