"""``command_succeeds``: the deterministic gate (the tests really pass)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from loops import errors
from loops.flow import testcount
from loops.flow.conditions import Condition
from loops.flow.context import Context
from loops.flow.outcome import Outcome, Verdict

#: bytes of output kept as evidence in the verdict
EVIDENCE_CHARS = 4000
#: default wall-clock limit of one check, in seconds
DEFAULT_TIMEOUT_S = 600.0


class CommandSucceeds(Condition):
    """Met when a command exits 0 (and, with ``min_tests``, enough tests passed)."""

    kind: ClassVar[str] = "command_succeeds"

    def __init__(
        self,
        cmd: str,
        args: Sequence[str] = (),
        *,
        cwd: str | Path | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        min_tests: int | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(cmd, str) or not cmd:
            raise errors.ConstructionError(
                f"command_succeeds() takes the program as a non-empty string, got {cmd!r}"
            )
        if isinstance(args, str) or not all(isinstance(a, str) for a in args):
            raise errors.ConstructionError(
                f"command_succeeds({cmd!r}, args) takes args as a list of strings "
                f"(an argv, never a shell string), got {args!r}"
            )
        if min_tests is not None and (isinstance(min_tests, bool) or min_tests < 0):
            raise errors.ConstructionError(f"min_tests={min_tests!r} must be a whole number >= 0")
        if timeout_s <= 0:
            raise errors.ConstructionError(f"timeout_s={timeout_s!r} must be positive")
        self.argv = (cmd, *args)
        self.cwd = None if cwd is None else Path(cwd)
        self.timeout_s = float(timeout_s)
        self.min_tests = min_tests
        self.env = dict(env or {})
        shown = (Path(cmd).name if os.path.isabs(cmd) else cmd, *args)
        self.name = name or f"command_succeeds({shlex.join(shown)})"

    def fields(self) -> dict[str, Any]:
        """The argv, working directory, timeout and test minimum."""
        body: dict[str, Any] = {"argv": list(self.argv), "timeout_s": self.timeout_s}
        if self.cwd is not None:
            body["cwd"] = str(self.cwd)
        if self.min_tests is not None:
            body["min_tests"] = self.min_tests
        return body

    async def check(self, ctx: Context, last: Outcome | None) -> Verdict:
        """Run the command in the run's working directory and judge its exit and output."""
        cwd = ctx.cwd / self.cwd if self.cwd is not None else ctx.cwd
        shown = self.name.removeprefix("command_succeeds(").removesuffix(")")
        try:
            code, output = await run_command(self.argv, cwd, self.timeout_s, self.env)
        except FileNotFoundError:
            if not cwd.is_dir():
                return Verdict(False, f"`{shown}` cannot run: directory {cwd} does not exist")
            return Verdict(
                False, f"`{shown}` cannot run: {self.argv[0]!r} is not installed or not on PATH"
            )
        except PermissionError as exc:
            return Verdict(False, f"`{shown}` cannot run: {exc}")
        except TimeoutError:
            return Verdict(False, f"`{shown}` timed out after {self.timeout_s:g}s and was killed")
        evidence = output[-EVIDENCE_CHARS:]
        return _judge(shown, code, output, self.min_tests, evidence)


def _judge(shown: str, code: int, output: str, min_tests: int | None, evidence: str) -> Verdict:
    if code != 0:
        tail = _last_line(output)
        return Verdict(
            False, f"`{shown}` exited {code}" + (f": {tail}" if tail else ""), evidence=evidence
        )
    count = testcount.count_tests(output)
    counted = "" if count is None else f" ({count.passed} tests passed)"
    if min_tests is None:
        return Verdict(True, f"`{shown}` exited 0{counted}", evidence=evidence)
    if count is None:
        return Verdict(
            False,
            f"`{shown}` exited 0 but its output has no test summary to count "
            f"(min_tests={min_tests}; readable runners: {testcount.KNOWN_RUNNERS})",
            evidence=evidence,
        )
    if count.passed < min_tests:
        return Verdict(
            False,
            f"`{shown}` exited 0 but only {count.passed} tests passed "
            f"({count.runner}; min_tests={min_tests})",
            evidence=evidence,
        )
    return Verdict(True, f"`{shown}` exited 0{counted}", evidence=evidence)


def _last_line(output: str) -> str:
    for line in reversed(output.splitlines()):
        if line.strip():
            return line.strip()[:300]
    return ""


async def run_command(
    argv: Sequence[str], cwd: Path, timeout_s: float, env: Mapping[str, str]
) -> tuple[int, str]:
    """Run ``argv`` in ``cwd``; the exit code and the combined output.

    The process gets its own session; on timeout or cancellation its whole process
    group is killed.

    Raises:
        FileNotFoundError: the program (or ``cwd``) does not exist.
        TimeoutError: it ran past ``timeout_s``.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env} if env else None,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except BaseException:
        _kill_group(proc)
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        raise
    return proc.returncode or 0, out.decode("utf-8", errors="replace")


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def command_succeeds(
    cmd: str,
    args: Sequence[str] = (),
    *,
    cwd: str | Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    min_tests: int | None = None,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
) -> Condition:
    """Met when ``cmd args...`` exits 0 in the run's working directory.

    Args:
        cmd: the program (looked up on PATH).
        args: its arguments, an argv list (never a shell string).
        cwd: a directory relative to the run's working directory to run in.
        timeout_s: wall-clock limit; past it the process group is killed and the
            verdict is "not met".
        min_tests: also require at least this many passed tests, read from the
            runner's summary; unreadable counts are "not met", with the reason.
        env: extra environment variables.
        name: the name shown in verdicts (default ``command_succeeds(<argv>)``).

    Raises:
        ConstructionError: a bad argument (a shell string for ``args``, a negative
            ``min_tests``...).
    """
    return CommandSucceeds(
        cmd, args, cwd=cwd, timeout_s=timeout_s, min_tests=min_tests, env=env, name=name
    )
