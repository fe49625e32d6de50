"""loops: run AI coding agents unattended, durably and honestly.

The library face (compose convergence loops in ``*.loop.py`` files)::

    from loops import loop, agent_job, command_succeeds, agent_check, budget

    job = loop(
        name="feature",
        body=agent_job("Make the failing tests in tests/ pass.", engine="claude"),
        until=[command_succeeds("pytest", ["-q"]), agent_check("Is the change minimal?")],
        max=8,
        budget=budget(usd=5),
    )

Everything else is reached through its module path (``loops.flow.events``, ...).

The names load on first use (PEP 562), so ``import loops.errors`` or a CLI command
that needs none of the library does not pay for importing all of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loops.flow.agent_job import agent_job
    from loops.flow.agents import define_agent, define_skill, from_file
    from loops.flow.approval import human_gate
    from loops.flow.budget import Budget, budget
    from loops.flow.command import command_succeeds
    from loops.flow.conditions import Condition, all_of, any_of, predicate, quorum
    from loops.flow.consolidation import consolidate_job
    from loops.flow.context import Context
    from loops.flow.dag import dag, parallel, sequence
    from loops.flow.events import Event, EventSink, EventType
    from loops.flow.evidence import review_context
    from loops.flow.isolation import isolated
    from loops.flow.jobs import Job, fn_job, gate_job
    from loops.flow.judge import agent_check
    from loops.flow.loop import loop
    from loops.flow.loopfile import define_job
    from loops.flow.outcome import Finding, Outcome, OutcomeStatus, RevisionRequest, Verdict
    from loops.flow.review import kickback, review_panel, revision_request
    from loops.flow.runner import RunResult, run
    from loops.flow.unchanged import unchanged
    from loops.runs.records import semantic_records_from_event
    from loops.runs.registry import (
        list_runs,
        read_run_status,
        run_events_path,
        run_semantic_records_path,
    )

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Budget": "loops.flow.budget",
    "Condition": "loops.flow.conditions",
    "Context": "loops.flow.context",
    "Event": "loops.flow.events",
    "EventSink": "loops.flow.events",
    "EventType": "loops.flow.events",
    "Finding": "loops.flow.outcome",
    "Job": "loops.flow.jobs",
    "Outcome": "loops.flow.outcome",
    "OutcomeStatus": "loops.flow.outcome",
    "RevisionRequest": "loops.flow.outcome",
    "RunResult": "loops.flow.runner",
    "Verdict": "loops.flow.outcome",
    "agent_check": "loops.flow.judge",
    "agent_job": "loops.flow.agent_job",
    "all_of": "loops.flow.conditions",
    "any_of": "loops.flow.conditions",
    "budget": "loops.flow.budget",
    "command_succeeds": "loops.flow.command",
    "consolidate_job": "loops.flow.consolidation",
    "dag": "loops.flow.dag",
    "define_agent": "loops.flow.agents",
    "define_job": "loops.flow.loopfile",
    "define_skill": "loops.flow.agents",
    "fn_job": "loops.flow.jobs",
    "from_file": "loops.flow.agents",
    "gate_job": "loops.flow.jobs",
    "human_gate": "loops.flow.approval",
    "isolated": "loops.flow.isolation",
    "kickback": "loops.flow.review",
    "list_runs": "loops.runs.registry",
    "loop": "loops.flow.loop",
    "parallel": "loops.flow.dag",
    "predicate": "loops.flow.conditions",
    "quorum": "loops.flow.conditions",
    "read_run_status": "loops.runs.registry",
    "review_context": "loops.flow.evidence",
    "review_panel": "loops.flow.review",
    "revision_request": "loops.flow.review",
    "run": "loops.flow.runner",
    "run_events_path": "loops.runs.registry",
    "run_semantic_records_path": "loops.runs.registry",
    "semantic_records_from_event": "loops.runs.records",
    "sequence": "loops.flow.dag",
    "unchanged": "loops.flow.unchanged",
}

__all__ = [
    "Budget",
    "Condition",
    "Context",
    "Event",
    "EventSink",
    "EventType",
    "Finding",
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
    "fn_job",
    "from_file",
    "gate_job",
    "human_gate",
    "isolated",
    "kickback",
    "list_runs",
    "loop",
    "parallel",
    "predicate",
    "quorum",
    "read_run_status",
    "review_context",
    "review_panel",
    "revision_request",
    "run",
    "run_events_path",
    "run_semantic_records_path",
    "semantic_records_from_event",
    "sequence",
    "unchanged",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'loops' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
