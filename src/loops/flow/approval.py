"""``human_gate()``: a job that waits for a person's answer, durably.

The gate asks its question once (an ``approval.requested`` event, the time asked kept
in the run's checkpoint) and looks for an answer in the run's :class:`Approvals`
(a file in the run's registry folder for local runs, the task's ``state`` for a
worker's runs), written by ``loop approve <runId> <path> [--reject --reason ...]``.

- Without ``timeout`` the gate does not hold the process: with no answer yet it ends
  ``paused`` (``waiting_approval``), and the run with it; once answered, ``loop
  approve`` queues the task again (or ``loop resume`` resumes a local run) and the
  gate passes or fails with the answer, everything before it restored.
- With ``timeout`` it waits for the answer, checking every ``poll_s``, until the
  timeout (counted from when it first asked, across restarts); then it passes or fails
  as ``on_timeout`` says.

The answer and who gave it are recorded in the outcome's data and in an
``approval.answered`` event.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from loops import errors
from loops.flow.context import Context
from loops.flow.events import EventType, format_ts
from loops.flow.jobs import Job
from loops.flow.outcome import Outcome, OutcomeStatus

#: what the summary of a gate still waiting for its answer starts with
WAITING = "waiting_approval"


class Approvals(Protocol):
    """Where a run's human answers are found, by gate path."""

    async def answer(self, path: str) -> Mapping[str, Any] | None:
        """The answer given for the gate at ``path``, or ``None`` while there is none.

        An answer is ``{"approved": bool, "by": str, "reason": str | None, "at": str}``.
        """
        ...


def make_answer(
    *, approved: bool, by: str, reason: str | None, now: dt.datetime | None = None
) -> dict[str, Any]:
    """An answer as :class:`Approvals` stores it."""
    return {
        "approved": approved,
        "by": by,
        "reason": reason,
        "at": format_ts(now or dt.datetime.now(dt.UTC)),
    }


class FileApprovals:
    """Answers in a JSON file (``{path: answer}``), e.g. in a run's registry folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        """Every answer given so far."""
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise errors.InputError(f"cannot read the answers in {self.path}: {exc}") from exc
        return document if isinstance(document, dict) else {}

    async def answer(self, path: str) -> Mapping[str, Any] | None:
        """The answer for ``path``, if given."""
        found = self.read().get(path)
        return found if isinstance(found, dict) else None

    def record(self, path: str, answer: Mapping[str, Any]) -> None:
        """Store ``answer`` for the gate at ``path`` (atomic replace of the file)."""
        document = {**self.read(), path: dict(answer)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".approvals-", dir=self.path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(document, out)
        os.replace(tmp, self.path)


class HumanGate(Job):
    """A gate a person answers (see the module docstring); build it with :func:`human_gate`."""

    kind: ClassVar[str] = "human_gate"

    def __init__(
        self,
        *,
        name: str,
        question: str,
        timeout_s: float | None,
        on_timeout: Literal["fail", "pass"],
        poll_s: float,
    ) -> None:
        self.name = name
        self.question = question
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout
        self.poll_s = poll_s

    def fields(self) -> dict[str, Any]:
        """The question and the timeout rule."""
        body: dict[str, Any] = {"question": self.question}
        if self.timeout_s is not None:
            body["timeout_s"] = self.timeout_s
            body["on_timeout"] = self.on_timeout
        return body

    async def run(self, ctx: Context) -> Outcome:
        """Find the answer, ask and wait for it, or pause (see the module docstring)."""
        approvals = ctx.run.approvals
        if approvals is None:
            raise errors.ConfigError(
                f"human_gate {self.name!r} needs a durable run to wait in: run the loop file "
                "with `loop run FILE --supervise` or as a task (`loop tasks:create --loop-file`)"
            )
        asked_at = await self._asked_at(ctx)
        while True:
            answer = await approvals.answer(ctx.path_text)
            if answer is not None:
                return self._answered(ctx, answer)
            if self.timeout_s is None:
                return Outcome(
                    OutcomeStatus.PAUSED,
                    f"{WAITING}: {ctx.path_text}: {self.question}",
                    {"waiting_approval": ctx.path_text},
                )
            waited = (ctx.run.now() - asked_at).total_seconds()
            if waited >= self.timeout_s:
                return self._timed_out(ctx, waited)
            await ctx.run.sleep(min(self.poll_s, self.timeout_s - waited))

    async def _asked_at(self, ctx: Context) -> dt.datetime:
        """When the question was first asked (asking it now, with an event, if never)."""
        key = f"human_gate:{ctx.key}"
        checkpoints = ctx.run.checkpoints
        saved = checkpoints.extra(key) if checkpoints is not None else None
        if isinstance(saved, str):
            return dt.datetime.fromisoformat(saved.replace("Z", "+00:00"))
        now = ctx.run.now()
        ctx.emit(
            EventType.APPROVAL_REQUESTED,
            name=self.name,
            question=self.question,
            timeout_s=self.timeout_s,
            on_timeout=self.on_timeout if self.timeout_s is not None else None,
        )
        if checkpoints is not None:
            await checkpoints.put_extra(key, format_ts(now))
        return now

    def _answered(self, ctx: Context, answer: Mapping[str, Any]) -> Outcome:
        approved = bool(answer.get("approved"))
        who = str(answer.get("by") or "someone")
        reason = answer.get("reason")
        ctx.emit(
            EventType.APPROVAL_ANSWERED,
            name=self.name,
            approved=approved,
            by=who,
            reason=reason,
            at=answer.get("at"),
        )
        verb = "approved" if approved else "rejected"
        why = f": {reason}" if reason else ""
        status = OutcomeStatus.PASS if approved else OutcomeStatus.FAIL
        return Outcome(status, f"{verb} by {who}{why}", {"approval": dict(answer)})

    def _timed_out(self, ctx: Context, waited: float) -> Outcome:
        status = OutcomeStatus.PASS if self.on_timeout == "pass" else OutcomeStatus.FAIL
        ctx.emit(
            EventType.APPROVAL_ANSWERED,
            name=self.name,
            approved=status is OutcomeStatus.PASS,
            by="timeout",
            reason=f"no answer within {self.timeout_s:g}s",
            at=format_ts(ctx.run.now()),
        )
        return Outcome(
            status,
            f"no answer within {self.timeout_s:g}s ({waited:.0f}s waited): "
            f"{'passed' if status is OutcomeStatus.PASS else 'failed'} as on_timeout says",
            {"approval": {"by": "timeout", "approved": status is OutcomeStatus.PASS}},
        )


def human_gate(
    name: str,
    question: str,
    *,
    timeout: float | None = None,
    on_timeout: Literal["fail", "pass"] = "fail",
    poll_s: float = 2.0,
) -> Job:
    """A job that waits for a person to approve or reject, durably.

    Args:
        name: the gate's name (its path segment).
        question: what the person is asked.
        timeout: seconds to wait for an answer (``None``: pause the run until answered).
        on_timeout: ``"fail"`` (default) or ``"pass"`` when the timeout is reached.
        poll_s: how often a waiting gate looks for the answer.

    Raises:
        ConstructionError: a bad name, question, timeout or ``on_timeout``.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise errors.ConstructionError(
            f"human_gate name {name!r} must be a non-empty string without '/'"
        )
    if not isinstance(question, str) or not question.strip():
        raise errors.ConstructionError(f"human_gate {name!r} needs a question")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise errors.ConstructionError(
            f"human_gate {name!r}: timeout={timeout!r} must be seconds > 0 or None"
        )
    if on_timeout not in ("fail", "pass"):
        raise errors.ConstructionError(
            f"human_gate {name!r}: on_timeout={on_timeout!r} must be 'fail' or 'pass'"
        )
    if isinstance(poll_s, bool) or not isinstance(poll_s, int | float) or poll_s <= 0:
        raise errors.ConstructionError(f"human_gate {name!r}: poll_s={poll_s!r} must be > 0")
    return HumanGate(
        name=name, question=question, timeout_s=timeout, on_timeout=on_timeout, poll_s=poll_s
    )
