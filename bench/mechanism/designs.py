"""Loop designs under test, each built with the real library for one task.

- ``lone-judge``: the agent works; one judge decides whether it is done.
- ``tests-judge``: the failure fed back; done needs the test command to exit 0 and
  one judge (no test count, no protected files).
- ``gated``: the agent works with the last failure fed back (fresh context each
  turn); done needs the visible tests to pass with at least ``min_tests`` counted,
  the protected files (tests, their selection, their runner) unchanged, and 2 of 3
  judges.
- ``gated-grounded``: ``gated``, and each turn is committed to git with the agent's
  report; the next fresh-context turn is grounded in those commits
  (``agent_job(ground=True)``).
- ``gated-session``: ``gated``, but one long session: every turn's prompt carries the
  whole conversation so far (each earlier prompt and answer), as a session that is
  never reset does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loops import (
    Context,
    Job,
    Outcome,
    OutcomeStatus,
    agent_check,
    agent_job,
    command_succeeds,
    fn_job,
    loop,
    quorum,
    sequence,
    unchanged,
)
from loops.flow.agent_job import feedback_section
from loops.git.repo import Repo
from mechanism.tasks import GIT_IDENTITY, PROTECTED, Task

DONE_QUESTION = (
    "Is the task described below fully done: the bug fixed in the code, every test "
    "passing, and no test weakened?\n\nTask: {prompt}"
)
JURY = (
    "Is the bug described below fixed in the code, for all inputs, not only the tested "
    "ones?\n\nTask: {prompt}",
    "Do the tests in tests/ still test what they tested before, and do they all pass?"
    "\n\nTask: {prompt}",
    "Is the change minimal and limited to what the task asks?\n\nTask: {prompt}",
)
#: environment of the visible test command (no bytecode files in the tree)
GATE_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}


def _gate(task: Task) -> list[Any]:
    argv = task.gate_argv
    judges = [
        agent_check(q.format(prompt=task.prompt), name=f"judge-{i}") for i, q in enumerate(JURY, 1)
    ]
    return [
        command_succeeds(argv[0], argv[1:], min_tests=task.min_tests, env=GATE_ENV, name="tests"),
        unchanged(*PROTECTED, name="protected"),
        quorum(2, *judges, name="jury"),
    ]


def lone_judge(task: Task, max_iterations: int) -> Job:
    """One judge decides; the worker's prompt never changes."""
    return loop(
        name="lone-judge",
        body=agent_job(task.prompt, name="worker"),
        until=agent_check(DONE_QUESTION.format(prompt=task.prompt), name="judge"),
        max=max_iterations,
    )


def tests_judge(task: Task, max_iterations: int) -> Job:
    """The test command's exit status and one judge; the failure fed back."""
    argv = task.gate_argv
    return loop(
        name="tests-judge",
        body=agent_job(task.prompt, name="worker", consume_feedback=True),
        until=[
            command_succeeds(argv[0], argv[1:], env=GATE_ENV, name="tests"),
            agent_check(DONE_QUESTION.format(prompt=task.prompt), name="judge"),
        ],
        max=max_iterations,
    )


def gated(task: Task, max_iterations: int) -> Job:
    """Tests with a count, protected files and a 2-of-3 jury; the failure fed back."""
    return loop(
        name="gated",
        body=agent_job(task.prompt, name="worker", consume_feedback=True),
        until=_gate(task),
        max=max_iterations,
    )


def gated_grounded(task: Task, max_iterations: int) -> Job:
    """``gated``, each turn committed and the next one grounded in the commits.

    ``agent_job(ground=True)`` puts the commits made since the run began (and the run's
    scratch notes) into each fresh-context prompt; the design commits every turn with
    the agent's report, so a failed attempt is remembered too.
    """

    async def commit(ctx: Context) -> Outcome:
        repo = await Repo.open(ctx.cwd)
        report = ctx.last.summary if ctx.last is not None else "(no report)"
        await repo.run("add", "-A")
        message = f"iteration {ctx.iteration}: worker turn\n\n{report}"
        await repo.run(*GIT_IDENTITY, "commit", "-q", "--allow-empty", "-m", message)
        return Outcome(OutcomeStatus.PASS, f"committed iteration {ctx.iteration}")

    body = sequence(
        agent_job(task.prompt, name="worker", ground=True, consume_feedback=True),
        fn_job(commit, name="commit"),
        name="turn",
    )
    return loop(name="gated-grounded", body=body, until=_gate(task), max=max_iterations)


def gated_session(task: Task, max_iterations: int) -> Job:
    """``gated`` as one long session: the whole conversation in every prompt."""
    turns: list[str] = []

    def prompt(ctx: Context) -> str:
        if ctx.last is not None and turns:
            turns[-1] += f"\n\n### Your answer\n{ctx.last.summary}"
        feedback = feedback_section(ctx)
        current = f"{task.prompt}\n\n{feedback}" if feedback else task.prompt
        history = "\n\n".join(turns)
        turns.append(f"## Turn {len(turns) + 1}\n{current}")
        if not history:
            return current
        return f"# The conversation so far\n\n{history}\n\n# Now\n\n{current}"

    return loop(
        name="gated-session",
        body=agent_job(prompt, name="worker"),
        until=_gate(task),
        max=max_iterations,
    )


DesignFn = Callable[[Task, int], Job]
DESIGNS: dict[str, DesignFn] = {
    "lone-judge": lone_judge,
    "tests-judge": tests_judge,
    "gated": gated,
    "gated-grounded": gated_grounded,
    "gated-session": gated_session,
}
