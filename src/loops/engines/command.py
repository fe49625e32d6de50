"""The ``command`` engine: any executable as an agent.

The prompt is written to the command's stdin; every stdout line is streamed as agent
text and the whole stdout is the final answer. The turn's settings reach the command
as environment variables (``LOOP_SYSTEM_PROMPT``, ``LOOP_MODEL``, ``LOOP_PERMISSION``,
``LOOP_RESUME_SESSION_ID``, ``LOOP_MAX_TURNS``), next to the request's own ``env``.

The exit status is classified by a table: 0 is success; the conventional "not found"
and "not executable" codes, and stderr that names an auth, rate-limit or network
failure, map to the same errors as the other engines; anything else is a crash whose
message is the last stderr line. The command runs in its own process group under the
wall-clock limit, like every agent.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from loops import errors
from loops.engines import base, process, stream

#: what each level means for the command engine (the README's permission table)
PERMISSION_NOTES: dict[base.Permission, str] = {
    level: "passed as `LOOP_PERMISSION`; the command enforces it, or not"
    for level in base.Permission
}
#: exit status -> our error (0 is success; signals are interruptions)
EXIT_CODES: dict[int, type[errors.EngineError]] = {
    126: errors.EnginePermissionDenied,
    127: errors.EngineNotFound,
}
#: stderr text -> our error, for commands that fail with a generic status
STDERR_RULES: tuple[stream.Rule, ...] = (
    stream.Rule(r"\b401\b|unauthori[sz]ed|invalid api key|not logged in", errors.EngineAuthError),
    stream.Rule(r"\b429\b|rate.limit|usage limit|too many requests", errors.EngineRateLimited),
    stream.Rule(
        r"connection refused|network is unreachable|could not resolve|name or service not known",
        errors.EngineNetworkError,
    ),
    stream.Rule(r"permission denied|operation not permitted", errors.EnginePermissionDenied),
)


@dataclasses.dataclass(frozen=True, slots=True)
class CommandOptions:
    """Settings of the ``command`` engine.

    Attributes:
        argv: the command; the prompt goes to its stdin.
        env: the base environment (``None``: this process's environment).
        kill_grace_s: SIGTERM-to-SIGKILL grace when stopping the command.
        default_timeout_s: wall-clock limit when the request sets none.
        max_output_bytes: cap on the stdout kept as the final answer (the end is kept).
    """

    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None
    kill_grace_s: float = process.KILL_GRACE_S
    default_timeout_s: float | None = 3600.0
    max_output_bytes: int = 1024 * 1024


class CommandEngine:
    """Runs an arbitrary executable as one agent turn (see the module docstring)."""

    name = "command"
    capabilities = base.Capabilities(streaming=True, permissions=())

    def __init__(self, options: CommandOptions) -> None:
        if not options.argv:
            raise errors.ConfigError("the command engine needs a command (argv)")
        self.options = options

    @classmethod
    def from_options(
        cls, *, argv: Sequence[str] | str | None = None, command: str | None = None, **rest: Any
    ) -> CommandEngine:
        """Build from plain options.

        Args:
            argv: the command as a list, or as one string split like a shell would
                (``shlex.split``; no shell runs it).
            command: alias of ``argv`` given as a string.
            **rest: the other fields of :class:`CommandOptions`.

        Raises:
            ConfigError: no command, an unparsable one, or unknown options.
        """
        raw = argv if argv is not None else command
        if raw is None:
            raise errors.ConfigError(
                "the command engine needs argv=[...] (or command='prog --flag'), "
                "e.g. create_engine('command', argv=['my-agent', '--quiet'])"
            )
        if isinstance(raw, str):
            try:
                parts = tuple(shlex.split(raw))
            except ValueError as exc:
                raise errors.ConfigError(f"command {raw!r} cannot be parsed: {exc}") from exc
        else:
            parts = tuple(str(a) for a in raw)
        fields = {f.name for f in dataclasses.fields(CommandOptions)} - {"argv"}
        unknown = sorted(set(rest) - fields)
        if unknown:
            raise errors.ConfigError(
                f"unknown command engine options {unknown}; "
                f"allowed: argv, {', '.join(sorted(fields))}"
            )
        return cls(CommandOptions(argv=parts, **rest))

    def build_env(self, request: base.TurnRequest) -> dict[str, str]:
        """The command's environment: base, the turn's settings, then the request's."""
        settings = {
            "LOOP_SYSTEM_PROMPT": request.system or "",
            "LOOP_MODEL": request.model or "",
            "LOOP_PERMISSION": str(request.permission),
            "LOOP_RESUME_SESSION_ID": request.resume_session_id or "",
            "LOOP_MAX_TURNS": "" if request.max_turns is None else str(request.max_turns),
        }
        return process.merged_env(self.options.env, {**settings, **request.env})

    async def run_turn(self, request: base.TurnRequest) -> AsyncIterator[base.TurnEvent]:
        """Run the command once; yield its output lines, then the result."""
        started = time.monotonic()
        spec = stream.turn_spec(
            request,
            self.options,
            argv=self.options.argv,
            env=self.build_env(request),
            stdin=request.prompt.encode(),
        )
        output: list[str] = []
        size = 0
        try:
            async with process.AgentProcess(spec) as proc:
                async for line in proc.lines():
                    yield base.AgentText(line + "\n")
                    output.append(line)
                    size += len(line) + 1
                    while size > self.options.max_output_bytes and len(output) > 1:
                        size -= len(output.pop(0)) + 1
                exit = await proc.wait()
        except errors.EngineNotFound as exc:
            yield base.TurnResult(
                status=base.TurnStatus.ERROR, error=exc, duration_s=time.monotonic() - started
            )
            return
        yield self._result(exit, "\n".join(output).strip("\n"))

    def _result(self, exit: process.ProcessExit, final_text: str) -> base.TurnResult:
        if exit.returncode == 0 and not exit.timed_out and not exit.stopped:
            return stream.exit_result(exit, error=None, final_text=final_text)
        name = Path(self.options.argv[0]).name
        error_class = EXIT_CODES.get(exit.returncode) if exit.returncode is not None else None
        if error_class is None or exit.timed_out or exit.stopped:
            return stream.unfinished_result(
                exit, agent=name, stderr_rules=STDERR_RULES, final_text=final_text
            )
        last = exit.stderr_last_line()
        return stream.exit_result(
            exit,
            error=error_class(f"{name} exited with code {exit.returncode}: {last or 'no stderr'}"),
            final_text=final_text,
        )
