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
"""

from loops.flow.budget import Budget, budget
from loops.flow.command import command_succeeds
from loops.flow.conditions import Condition, all_of, any_of, predicate, quorum
from loops.flow.consolidation import consolidate_job
from loops.flow.context import Context
from loops.flow.dag import dag, parallel, sequence
from loops.flow.events import Event, EventSink, EventType
from loops.flow.isolation import isolated
from loops.flow.jobs import Job, agent_job, fn_job, gate_job
from loops.flow.judge import agent_check
from loops.flow.loop import loop
from loops.flow.loopfile import define_job
from loops.flow.outcome import Outcome, OutcomeStatus, RevisionRequest, Verdict
from loops.flow.runner import RunResult, run
from loops.flow.unchanged import unchanged

__all__ = [
    "Budget",
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
    "define_job",
    "fn_job",
    "gate_job",
    "isolated",
    "loop",
    "parallel",
    "predicate",
    "quorum",
    "run",
    "sequence",
    "unchanged",
]
