"""What a task's agent is told each turn, as a plain function over what is known.

The first turn gets the task, how it will be judged, and how to report progress. Every
later turn also gets why the previous iteration did not pass (the failing verdicts and
their evidence), the STEP markers already DONE (so it does not redo them), and, in a
git repository, the commits made since the task started. A retried task's first turn
is told where the previous attempt stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from loops.queue.steps import Step, StepStatus


@dataclasses.dataclass(frozen=True, slots=True)
class Resumed:
    """Where a previous attempt of the task stopped (from its checkpoint).

    Attributes:
        iterations: iterations the previous attempts completed.
        last_verdict: the last gate verdict they got, if any.
    """

    iterations: int
    last_verdict: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TurnFacts:
    """Everything a turn's prompt is built from.

    Attributes:
        prompt: the task's prompt.
        check: the check command, if any.
        check_offline: the check runs in a sandbox with the network cut off (the
            agent is told, so it does not write tests that need the network).
        success: the success criteria, if any.
        steps: the task's recorded steps.
        grounding: the commits made since the task started, rendered ('' when none).
        feedback: why the previous iteration did not pass ('' on the first).
        resumed: where a previous attempt stopped, on a retried task's first turn.
    """

    prompt: str
    check: str | None = None
    check_offline: bool = False
    success: str | None = None
    steps: Sequence[Step] = ()
    grounding: str = ""
    feedback: str = ""
    resumed: Resumed | None = None


STEP_HELP = (
    "Report progress with one line per finished piece of work, exactly:\n"
    "STEP[<name>]: DONE idempotency=<stable-key> note=<what you did>\n"
    "(or FAILED instead of DONE). Steps reported DONE are not redone on a retry."
)


def _gate_section(facts: TurnFacts) -> list[str]:
    check, success = facts.check, facts.success
    if not check and not success:
        return []
    lines = ["## How the work is judged (you cannot mark it done yourself)"]
    if check:
        offline = " (it runs sandboxed, without network access)" if facts.check_offline else ""
        lines.append(f"- This command must succeed in the working directory: `{check}`{offline}")
    if success:
        lines.append(f"- An independent judge decides whether this holds: {success}")
    return lines


def _steps_section(steps: Sequence[Step]) -> list[str]:
    done = [s for s in steps if s.status is StepStatus.DONE]
    if not done:
        return []
    lines = ["## Steps already DONE (do not redo them)"]
    for step in done:
        note = f": {step.note}" if step.note else ""
        lines.append(f"- {step.name} (idempotency={step.idempotency_key}){note}")
    return lines


def _resumed_section(resumed: Resumed | None) -> list[str]:
    if resumed is None:
        return []
    lines = [
        "## This task was interrupted and is resumed",
        f"Earlier attempts completed {resumed.iterations} iteration(s); continue from "
        "the current state of the working directory instead of starting over.",
    ]
    if resumed.last_verdict:
        lines.append(f"The last gate verdict was: {resumed.last_verdict}")
    return lines


def turn_prompt(facts: TurnFacts) -> str:
    """The prompt of one worker turn (see the module docstring)."""
    sections = [
        [facts.prompt.strip()],
        _gate_section(facts),
        _resumed_section(facts.resumed),
        _steps_section(facts.steps),
        [facts.grounding.strip()] if facts.grounding.strip() else [],
        [facts.feedback.strip()] if facts.feedback.strip() else [],
        ["## Progress markers", STEP_HELP],
    ]
    return "\n\n".join("\n".join(s) for s in sections if s)
