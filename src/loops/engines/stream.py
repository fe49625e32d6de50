"""The shared driver of JSON-lines agent CLIs, and their error-classification tables.

An engine that runs a CLI printing one JSON event per line supplies a
:class:`StreamParser`; :func:`run_jsonl_turn` starts the process, feeds it every
well-formed object (malformed lines are logged and skipped, never fatal), stops the
agent when the parser has seen enough to classify a failure (e.g. the tool's own
network-retry signals), and ends with the parser's :class:`~loops.engines.base.TurnResult`.

Classification is data: each engine keeps small tables of :class:`Rule` (a pattern
and the error it means) instead of a ladder of ``if``/``try``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from loops import errors
from loops.engines import base, process, recording

log = logging.getLogger(__name__)

#: how much of the end of the agent's stderr a turn's result keeps, in characters
RESULT_STDERR_CHARS = 4000


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """One row of a classification table: text matching ``pattern`` means ``error``.

    Attributes:
        pattern: a regular expression searched (case-insensitively) in the text.
        error: the error class the match means.
        hint: what to do about it, appended to the message.
    """

    pattern: str
    error: type[errors.EngineError]
    hint: str = ""

    def matches(self, text: str) -> bool:
        """Whether the rule's pattern occurs in ``text``."""
        return re.search(self.pattern, text, re.IGNORECASE) is not None


def classify(rules: Sequence[Rule], text: str, *, prefix: str) -> errors.EngineError | None:
    """Build the error of the first rule matching ``text``, or ``None``.

    Args:
        rules: the table, first match wins.
        text: the agent's error text (a message, a stderr line).
        prefix: names the agent in the message, e.g. ``"claude"``.
    """
    for rule in rules:
        if rule.matches(text):
            message = f"{prefix}: {one_line(text)}"
            if rule.hint:
                message += f" ({rule.hint})"
            if rule.error is errors.EngineRateLimited:
                return errors.EngineRateLimited(message, retry_after_s=retry_after_from_text(text))
            return rule.error(message)
    return None


_RETRY_AFTER = re.compile(
    r"(?:try again|retry) (?:in|after) (\d+(?:\.\d+)?)\s*"
    r"(ms|milliseconds?|s|sec|seconds?|m|min|minutes?|h|hours?)\b",
    re.IGNORECASE,
)
_UNIT_S = {"ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}


def retry_after_from_text(text: str) -> float | None:
    """Parse "try again in 20s" / "retry after 2 minutes" into seconds; None if absent."""
    match = _RETRY_AFTER.search(text)
    if match is None:
        return None
    amount, unit = float(match.group(1)), match.group(2).lower()
    if unit.startswith("milli"):
        unit = "ms"
    elif unit.startswith("min"):
        unit = "min"
    elif unit.startswith("h"):
        unit = "h"
    return amount * _UNIT_S.get(unit, 1.0)


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace and cut ``text`` to one readable line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class StreamParser(Protocol):
    """Turns one agent's JSON events into turn events (one parser per turn)."""

    @property
    def stop_error(self) -> errors.EngineError | None:
        """Set once the stream shows a failure worth stopping the agent for now."""
        ...

    def feed(self, event: dict[str, Any]) -> list[base.TurnEvent]:
        """Digest one JSON object from stdout; return the events to emit."""
        ...

    async def finish(self, exit: process.ProcessExit) -> base.TurnResult:
        """Build the turn's result once the process has ended."""
        ...


class StderrAware(Protocol):
    """A parser that also reads the agent's stderr lines (optional)."""

    def feed_stderr(self, line: str) -> None:
        """Digest one stderr line; may set ``stop_error``."""
        ...


class ProcessOptions(Protocol):
    """The engine settings that shape an agent process (see ``options.CliOptions``)."""

    @property
    def kill_grace_s(self) -> float:
        """SIGTERM-to-SIGKILL grace when stopping the agent."""
        ...

    @property
    def default_timeout_s(self) -> float | None:
        """Wall-clock limit when the request sets none."""
        ...


def turn_spec(
    request: base.TurnRequest,
    options: ProcessOptions,
    *,
    argv: Sequence[str],
    env: Mapping[str, str],
    stdin: bytes,
    install_hint: str = "",
) -> process.ProcessSpec:
    """The agent process of one turn: in the request's cwd and sandbox, under its limit.

    Args:
        request: the turn (its ``cwd``, ``sandbox`` and ``timeout_s`` are used).
        options: the engine's settings (the grace, the default wall-clock limit).
        argv: the command.
        env: the agent's complete environment.
        stdin: what the agent reads (the prompt).
        install_hint: the command that installs the executable.
    """
    timeout_s = request.timeout_s
    if timeout_s is None:
        timeout_s = options.default_timeout_s
    return process.ProcessSpec(
        argv=argv,
        cwd=Path(request.cwd),
        sandbox=request.sandbox,
        env=env,
        stdin=stdin,
        timeout_s=timeout_s,
        kill_grace_s=options.kill_grace_s,
        install_hint=install_hint,
    )


async def run_jsonl_turn(
    spec: process.ProcessSpec, parser: StreamParser, *, agent: str
) -> AsyncGenerator[base.TurnEvent, None]:
    """Run ``spec`` and stream ``parser``'s events, ending with its ``TurnResult``.

    A parser with a ``feed_stderr(line)`` method (:class:`StderrAware`) also sees each
    stderr line as it arrives; a ``stop_error`` it sets there stops the agent even
    while stdout is silent.

    Args:
        spec: the process to run.
        parser: this turn's parser.
        agent: the agent's name for log and error messages.
    """
    started = time.monotonic()
    raw = recording.raw_sink()
    holder: list[process.AgentProcess] = []
    feed_stderr = getattr(parser, "feed_stderr", None)
    if callable(feed_stderr):

        def on_stderr_line(line: str) -> None:
            feed_stderr(line)
            if parser.stop_error is not None and holder:
                holder[0].request_stop()

        spec = dataclasses.replace(spec, on_stderr_line=on_stderr_line)
    try:
        async with process.AgentProcess(spec) as proc:
            holder.append(proc)
            malformed = 0
            async for line in proc.lines():
                if raw is not None:
                    raw(line)
                event = process.parse_json_line(line)
                if event is None:
                    if line.strip():
                        malformed += 1
                        log.warning("%s: skipped a non-JSON output line: %s", agent, line[:200])
                    continue
                for item in parser.feed(event):
                    yield item
                if parser.stop_error is not None:
                    break
            if parser.stop_error is not None:
                log.info("%s: stopping the agent early: %s", agent, parser.stop_error)
                await proc.stop()
            exit = await proc.wait()
    except errors.EngineNotFound as exc:
        yield base.TurnResult(
            status=base.TurnStatus.ERROR, error=exc, duration_s=time.monotonic() - started
        )
        return
    if malformed:
        log.warning("%s: %d malformed output lines were skipped", agent, malformed)
    yield await parser.finish(exit)


def unfinished_result(
    exit: process.ProcessExit,
    *,
    agent: str,
    stderr_rules: Sequence[Rule] = (),
    **fields: Any,
) -> base.TurnResult:
    """The result of a turn that produced no terminal event.

    A missing terminal event means interrupted or crashed, whatever the exit code:
    past the deadline it is a timeout; stopped by us or by a signal it is an
    interruption; otherwise the stderr tables classify it, or it is a crash.

    Args:
        exit: how the process ended.
        agent: the agent's name for messages.
        stderr_rules: the engine's stderr table.
        **fields: further ``TurnResult`` fields (session id, usage...).
    """
    status = base.TurnStatus.ERROR
    error: errors.EngineError | None = None
    if exit.timed_out:
        status = base.TurnStatus.INTERRUPTED
        limit = f" {exit.duration_s:.0f}s" if exit.duration_s else ""
        error = errors.EngineTimeout(
            f"{agent} ran past its wall-clock limit{limit} and was killed (raise timeout_s)"
        )
    elif exit.stopped or exit.signal_name is not None:
        status = base.TurnStatus.INTERRUPTED
        how = "was stopped" if exit.stopped else f"was killed by {exit.signal_name}"
        error = errors.EngineCrashed(f"{agent} {how} before finishing its turn (interrupted)")
    else:
        last = exit.stderr_last_line()
        error = classify(stderr_rules, exit.stderr_tail, prefix=agent) if last else None
        if error is None:
            detail = f": {one_line(last)}" if last else " and printed nothing on stderr"
            error = errors.EngineCrashed(
                f"{agent} exited with code {exit.returncode} without a final result{detail}"
            )
    return exit_result(exit, error=error, status=status, **fields)


def exit_result(
    exit: process.ProcessExit,
    *,
    error: errors.EngineError | None,
    status: base.TurnStatus | None = None,
    **fields: Any,
) -> base.TurnResult:
    """The result of a turn whose process ended as ``exit`` says.

    Args:
        exit: how the process ended (its exit code, duration and stderr tail are kept).
        error: the classified failure, or ``None`` for a turn that succeeded.
        status: how the turn ended; by default ``OK`` without ``error``, else ``ERROR``.
        **fields: further ``TurnResult`` fields (final text, session id, usage...).
    """
    if status is None:
        status = base.TurnStatus.OK if error is None else base.TurnStatus.ERROR
    return base.TurnResult(
        status=status,
        error=error,
        exit_code=exit.returncode,
        duration_s=exit.duration_s,
        stderr_tail=exit.stderr_tail[-RESULT_STDERR_CHARS:],
        **fields,
    )


def prompt_with_system(request: base.TurnRequest) -> str:
    """The prompt with the system prompt in front, for CLIs that have no flag for it."""
    if not request.system:
        return request.prompt
    return f"<system>\n{request.system}\n</system>\n\n{request.prompt}"


def int_or_zero(value: Any) -> int:
    """A JSON number as an int; anything else (absent, null, text) counts as 0."""
    return int(value) if isinstance(value, int | float) else 0


def str_or_none(value: Any) -> str | None:
    """A non-empty JSON string, or ``None``."""
    return value if isinstance(value, str) and value else None
