"""``command_succeeds``: the deterministic gate (the tests really pass).

With ``sandbox="bwrap"`` the command runs under :mod:`loops.engines.sandbox` like a
sandboxed agent (the run's directory writable, the rest read-only, a private /tmp, the
homes hidden), with its own network setting (cut off unless ``network=True``) and an
environment reduced to :data:`~loops.engines.sandbox.CHECK_ENV_KEEP`. In a run with a
sandbox floor (a ``loop worker --sandbox bwrap`` task) every command runs at least that
confined, whatever it asks (:mod:`loops.flow.confinement`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shlex
import shutil
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from loops import errors
from loops.engines.sandbox import Sandbox, require_bwrap
from loops.flow import confinement, testcount
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
        sandbox: str | Sandbox | None = None,
        network: bool | None = None,
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
        self.sandbox = _check_sandbox(cmd, sandbox, network)
        shown = (Path(cmd).name if os.path.isabs(cmd) else cmd, *args)
        self.name = name or f"command_succeeds({shlex.join(shown)})"

    def fields(self) -> dict[str, Any]:
        """The argv, working directory, timeout and test minimum."""
        body: dict[str, Any] = {"argv": list(self.argv), "timeout_s": self.timeout_s}
        if self.cwd is not None:
            body["cwd"] = str(self.cwd)
        if self.min_tests is not None:
            body["min_tests"] = self.min_tests
        if self.sandbox is not None:
            body["sandbox"] = "bwrap"
            body["network"] = "shared" if self.sandbox.network else "none"
        return body

    async def prepare(self, ctx: Context) -> None:
        """Refuse to start a run whose sandbox cannot start (before any agent turn).

        Raises:
            SandboxUnavailable: bwrap is missing or cannot create its namespaces here.
        """
        if self.sandbox is not None or ctx.run.sandbox_floor is not None:
            await asyncio.to_thread(require_bwrap)

    async def check(self, ctx: Context, last: Outcome | None) -> Verdict:
        """Run the command in the run's working directory and judge its exit and output.

        It runs under its own sandbox, or the run's sandbox floor where that is stricter
        (:mod:`loops.flow.confinement`): a loop file cannot weaken a sandboxed worker's.
        """
        cwd = ctx.cwd / self.cwd if self.cwd is not None else ctx.cwd
        shown = self.name.removeprefix("command_succeeds(").removesuffix(")")
        confined = confinement.for_command(ctx, self.sandbox, subject=self.name)
        box = confined.sandbox
        try:
            code, output = await run_command(
                self.argv, cwd, self.timeout_s, self.env, sandbox=box, root=ctx.cwd
            )
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
        verdict = _judge(shown, code, output, self.min_tests, output[-EVIDENCE_CHARS:])
        if verdict.met or box is None:
            return verdict
        # say where it ran: a check that needs the network fails only under the sandbox
        network = "shared" if box.network else "cut off"
        floor = (
            f"; the worker's sandbox floor overrode: {', '.join(confined.overridden)}"
            if confined.overridden
            else ""
        )
        return dataclasses.replace(
            verdict, reason=f"{verdict.reason} (ran under bwrap, network {network}{floor})"
        )


def _check_sandbox(cmd: str, sandbox: str | Sandbox | None, network: bool | None) -> Sandbox | None:
    """The sandbox a check runs in: a kind's with the network cut unless ``network``."""
    if network is not None and not isinstance(network, bool):
        raise errors.ConstructionError(
            f"command_succeeds({cmd!r}) takes network=True (shared) or False (cut off), "
            f"got {network!r}"
        )
    try:
        box = sandbox if isinstance(sandbox, Sandbox) else Sandbox.parse(sandbox)
    except errors.ConfigError as exc:
        raise errors.ConstructionError(
            f"command_succeeds({cmd!r}) sandbox=: {exc.message}"
        ) from exc
    if box is None:
        if network is not None:
            raise errors.ConstructionError(
                f"command_succeeds({cmd!r}, network={network!r}) needs sandbox='bwrap': "
                "without a sandbox the command always shares the host's network"
            )
        return None
    if isinstance(sandbox, Sandbox):
        return box if network is None else dataclasses.replace(box, network=network)
    return box.for_check(network=bool(network))


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
    argv: Sequence[str],
    cwd: Path,
    timeout_s: float,
    env: Mapping[str, str],
    *,
    sandbox: Sandbox | None = None,
    root: Path | None = None,
) -> tuple[int, str]:
    """Run ``argv`` in ``cwd``; the exit code and the combined output.

    The process gets its own session; on timeout or cancellation its whole process
    group is killed. With a ``sandbox`` it runs confined, ``root`` (default ``cwd``)
    writable, in the sandbox's filtered environment plus ``env``.

    Raises:
        FileNotFoundError: the program (or ``cwd``) does not exist.
        TimeoutError: it ran past ``timeout_s``.
        SandboxUnavailable: the sandbox cannot start here (never a run without it).
    """
    full_env: dict[str, str] | None
    if sandbox is not None:
        argv, full_env = confine(argv, cwd=cwd, root=root or cwd, env=env, sandbox=sandbox)
    else:
        full_env = {**os.environ, **env} if env else None
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=full_env,
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


def confine(
    argv: Sequence[str], *, cwd: Path, root: Path, env: Mapping[str, str], sandbox: Sandbox
) -> tuple[list[str], dict[str, str]]:
    """``argv`` wrapped in ``sandbox`` (``root`` writable) and the environment it gets.

    The program is looked up on the filtered environment's PATH first, so a missing one
    is the same :class:`FileNotFoundError` as without a sandbox (not bwrap's exit 1),
    and its installation stays visible inside hidden homes.

    Raises:
        FileNotFoundError: the program or ``cwd`` does not exist.
        SandboxUnavailable: the sandbox cannot start here.
    """
    require_bwrap()  # a sandbox that cannot start says so before anything else
    if not cwd.is_dir():
        raise FileNotFoundError(cwd)
    full_env = {**sandbox.filter_env(os.environ), **env}
    program = argv[0]
    if os.sep in program:
        program = str(cwd / program)  # relative to the check's directory, not ours
        if not Path(program).is_file():
            raise FileNotFoundError(argv[0])
    else:
        found = shutil.which(program, path=full_env.get("PATH", os.defpath))
        if found is None:
            raise FileNotFoundError(program)
        program = found
    if root.resolve() != cwd.resolve():
        sandbox = dataclasses.replace(sandbox, writable=(*sandbox.writable, root))
    return sandbox.wrap([program, *argv[1:]], cwd=cwd), full_env


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
    sandbox: str | Sandbox | None = None,
    network: bool | None = None,
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
        sandbox: ``"bwrap"`` runs the command under bubblewrap, as
            ``agent_job(sandbox="bwrap")`` runs an agent: the run's working directory
            writable, the rest read-only, a private /tmp, the homes hidden, and an
            environment of shell basics and proxies only (no engine keys) plus ``env``.
            A :class:`loops.engines.sandbox.Sandbox` is used as it is. A sandbox that
            cannot start fails the run (``SandboxUnavailable``) before its first job.
        network: with a sandbox, ``True`` shares the host's network; ``False`` (the
            default for ``sandbox="bwrap"``) cuts it off, so a check cannot fetch or
            send anything. Needs ``sandbox``.

    Raises:
        ConstructionError: a bad argument (a shell string for ``args``, a negative
            ``min_tests``, an unknown sandbox, ``network`` without a sandbox...).
    """
    return CommandSucceeds(
        cmd,
        args,
        cwd=cwd,
        timeout_s=timeout_s,
        min_tests=min_tests,
        env=env,
        name=name,
        sandbox=sandbox,
        network=network,
    )
