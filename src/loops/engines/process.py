"""Agent subprocesses: argv only, own process group, wall-clock limit, clean kills.

Every agent CLI runs through :class:`AgentProcess`:

- the command is an argv list (never a shell string) whose executable is resolved on
  the ``PATH`` the agent will see; a missing one raises
  :class:`~loops.errors.EngineNotFound` carrying the install command;
- the process starts a new session, so it leads its own process group and every tool
  process it spawns can be killed with it;
- stdout is read line by line with a bounded buffer (an over-long line is truncated
  and so fails JSON parsing instead of exhausting memory);
- stderr is drained concurrently into a bounded tail used to classify failures, and
  each of its lines can be handed to a callback (tools that report retries only on
  stderr, like Gemini CLI);
- a wall-clock deadline stops the process (SIGTERM to the group and to every
  descendant that moved to a group of its own, a grace period, then SIGKILL); leaving
  the ``async with`` block early (``aclose``, task cancellation, an exception) does
  the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from loops import errors
from loops.engines.sandbox import Sandbox

log = logging.getLogger(__name__)

#: default cap on one stdout line; longer lines are cut (and fail JSON parsing)
MAX_LINE_BYTES = 8 * 1024 * 1024
#: default size of the stderr tail kept for classification and reports
STDERR_TAIL_BYTES = 64 * 1024
#: default time between SIGTERM and SIGKILL
KILL_GRACE_S = 5.0
_READ_CHUNK_BYTES = 64 * 1024
#: how often a blocked read checks whether the leader has exited
_EXIT_POLL_S = 0.25


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessSpec:
    """How to run one agent process.

    Attributes:
        argv: the command; ``argv[0]`` is looked up on the agent's ``PATH``.
        cwd: working directory.
        env: the complete environment of the agent (``None``: inherit ours).
        stdin: bytes written to stdin before it is closed (``None``: /dev/null).
        timeout_s: wall-clock limit; ``None`` for none.
        kill_grace_s: time between SIGTERM and SIGKILL when stopping.
        max_line_bytes: cap on one stdout line.
        stderr_tail_bytes: how much of stderr's end to keep.
        install_hint: the command that installs the executable, for the not-found error.
        drain_after_exit_s: once the agent exits, how long to keep reading output its
            background children still hold open before killing its group.
        on_stderr_line: called with each stderr line (cut at ``max_line_bytes``) as it
            arrives; it may call :meth:`AgentProcess.request_stop`.
        sandbox: run the process confined (:mod:`loops.engines.sandbox`), with its
            environment filtered; ``None`` runs it as it is.
    """

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str] | None = None
    stdin: bytes | None = None
    timeout_s: float | None = None
    kill_grace_s: float = KILL_GRACE_S
    max_line_bytes: int = MAX_LINE_BYTES
    stderr_tail_bytes: int = STDERR_TAIL_BYTES
    install_hint: str = ""
    drain_after_exit_s: float = 2.0
    on_stderr_line: Callable[[str], None] | None = None
    sandbox: Sandbox | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessExit:
    """How an agent process ended.

    Attributes:
        returncode: the exit status (negative: killed by that signal).
        timed_out: the wall-clock limit was reached and the process was stopped.
        stopped: the process was stopped by us (timeout, early stop or cancellation).
        stderr_tail: the end of stderr, decoded.
        duration_s: wall time from start to exit.
        truncated_lines: how many stdout lines were cut at ``max_line_bytes``.
    """

    returncode: int | None
    timed_out: bool
    stopped: bool
    stderr_tail: str
    duration_s: float
    truncated_lines: int = 0

    @property
    def signal_name(self) -> str | None:
        """The name of the signal that ended the process, if one did."""
        code = self.returncode
        if code is None:
            return None
        number = -code if code < 0 else code - 128 if code in (130, 137, 143) else None
        if number is None:
            return None
        try:
            return signal.Signals(number).name
        except ValueError:
            return None

    def stderr_last_line(self) -> str:
        """The last non-blank stderr line (the usual one-line CLI error)."""
        for line in reversed(self.stderr_tail.splitlines()):
            if line.strip():
                return line.strip()
        return ""


def merged_env(base: Mapping[str, str] | None, overlay: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment: ``base`` (or this process's own) with ``overlay`` on top.

    Only this function passes the parent's environment through, so that an engine
    given an explicit ``base`` hands the agent nothing else.
    """
    env = dict(os.environ if base is None else base)
    env.update(overlay)
    return env


def parse_json_line(line: str) -> dict[str, Any] | None:
    """Parse one JSONL line into an object; ``None`` for blank, malformed or non-objects."""
    text = line.strip()
    if not text or text[0] != "{":
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def resolve_executable(argv0: str, env: Mapping[str, str] | None, install_hint: str) -> str:
    """Find ``argv0`` on the agent's PATH.

    Raises:
        EngineNotFound: it is not there; the message carries ``install_hint``.
    """
    path = (env if env is not None else os.environ).get("PATH")
    found = shutil.which(argv0, path=path)
    if found is None:
        hint = f"; install it with: {install_hint}" if install_hint else ""
        raise errors.EngineNotFound(f"{argv0!r} was not found on PATH{hint}")
    return found


class AgentProcess:
    """One running agent; use ``async with AgentProcess(spec) as proc``.

    Entering starts the process (raising ``EngineNotFound`` when the executable is
    missing); leaving stops it if it still runs, whatever the reason for leaving.
    """

    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self._proc: asyncio.subprocess.Process | None = None
        self._started = 0.0
        self._deadline: float | None = None
        self._stderr = bytearray()
        self._tasks: list[asyncio.Task[None]] = []
        self._timed_out = False
        self._stopped = False
        self._stop_requested = False
        self._truncated = 0

    @property
    def pid(self) -> int | None:
        """The process id (also its process group id), once started."""
        return None if self._proc is None else self._proc.pid

    async def __aenter__(self) -> AgentProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None and self._proc.returncode is None:
            await self.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._proc is not None:
            # A pipe a killed grandchild held may not have reported EOF yet; close the
            # transport now rather than leave it to the garbage collector (asyncio has
            # no public way; the process itself is gone by now).
            transport = getattr(self._proc, "_transport", None)
            if transport is not None:
                transport.close()

    async def start(self) -> None:
        """Start the process.

        Raises:
            EngineNotFound: the executable is missing or not runnable.
        """
        spec = self.spec
        executable = resolve_executable(spec.argv[0], spec.env, spec.install_hint)
        argv = [executable, *spec.argv[1:]]
        env = dict(spec.env) if spec.env is not None else None
        if spec.sandbox is not None:
            argv = spec.sandbox.wrap(argv, cwd=spec.cwd)
            env = spec.sandbox.filter_env(os.environ if env is None else env)
        stdin = asyncio.subprocess.DEVNULL if spec.stdin is None else asyncio.subprocess.PIPE
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=spec.cwd,
                env=env,
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except PermissionError as exc:
            raise errors.EngineNotFound(f"{executable!r} is not executable: {exc}") from exc
        except FileNotFoundError as exc:
            if not spec.cwd.is_dir():
                raise errors.InputError(
                    f"agent cwd {spec.cwd} does not exist; create it or pass an existing cwd"
                ) from exc
            raise errors.EngineNotFound(f"{executable!r} could not be started: {exc}") from exc
        self._started = time.monotonic()
        if spec.timeout_s is not None:
            self._deadline = self._started + spec.timeout_s
        self._tasks.append(asyncio.create_task(self._drain_stderr()))
        if spec.stdin is not None:
            self._tasks.append(asyncio.create_task(self._feed_stdin(spec.stdin)))

    async def _feed_stdin(self, data: bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        stdin = self._proc.stdin
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            log.debug("agent closed stdin before reading all of it")
        finally:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin.close()

    def request_stop(self) -> None:
        """Ask :meth:`lines` to end at its next poll (the caller then stops the agent)."""
        self._stop_requested = True

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        limit = self.spec.stderr_tail_bytes
        callback = self.spec.on_stderr_line
        pending = bytearray()
        while chunk := await self._proc.stderr.read(_READ_CHUNK_BYTES):
            self._stderr += chunk
            if len(self._stderr) > limit:
                del self._stderr[: len(self._stderr) - limit]
            if callback is None:
                continue
            pending += chunk
            *complete, rest = pending.split(b"\n")
            pending = bytearray(rest[: self.spec.max_line_bytes])
            for line in complete:
                callback(_decode(line[: self.spec.max_line_bytes]))
        if callback is not None and pending:
            callback(_decode(pending))

    def _remaining_s(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    async def lines(self) -> AsyncIterator[str]:
        """Yield stdout lines (without the newline) until EOF or the deadline.

        At the deadline the process is stopped and iteration ends; ``wait()`` then
        reports ``timed_out``.
        """
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        buffer = bytearray()
        dropping = False
        limit = self.spec.max_line_bytes
        while True:
            chunk = await self._read_chunk(stdout)
            if chunk is None:  # deadline
                self._timed_out = True
                await self.stop()
                break
            if not chunk:
                break
            start = 0
            while (newline := chunk.find(b"\n", start)) != -1:
                if not dropping:
                    buffer += chunk[start:newline]
                    yield self._cut(buffer, limit)
                dropping = False
                buffer.clear()
                start = newline + 1
            if not dropping:
                buffer += chunk[start:]
                if len(buffer) > limit:
                    # Emit the head now and drop the rest of the line as it arrives.
                    yield self._cut(buffer, limit)
                    buffer.clear()
                    dropping = True
        if buffer and not dropping:
            yield _decode(buffer)

    def _cut(self, line: bytearray, limit: int) -> str:
        if len(line) > limit:
            self._truncated += 1
            log.warning("agent output line longer than %d bytes was cut", limit)
        return _decode(line[:limit])

    async def _read_chunk(self, stdout: asyncio.StreamReader) -> bytes | None:
        """The next stdout chunk, b'' at EOF, or None once the deadline passed.

        The leader's exit is watched through ``returncode``: on Python 3.11 a
        ``Process.wait()`` begun before the exit only returns once every pipe is
        closed, which a background child holding stdout can delay forever.
        """
        assert self._proc is not None
        read = asyncio.ensure_future(stdout.read(_READ_CHUNK_BYTES))
        exited_at: float | None = None
        try:
            while True:
                if self._stop_requested:
                    return b""
                remaining = self._remaining_s()
                if remaining is not None and remaining <= 0:
                    return None
                step = _EXIT_POLL_S if remaining is None else min(remaining, _EXIT_POLL_S)
                done, _ = await asyncio.wait({read}, timeout=step)
                if done:
                    return read.result()
                if self._proc.returncode is None:
                    continue
                # The leader exited; its children may still hold stdout open.
                now = time.monotonic()
                exited_at = now if exited_at is None else exited_at
                if now - exited_at >= self.spec.drain_after_exit_s:
                    self._kill_group(signal.SIGKILL)
                    return b""
        finally:
            if not read.done():
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await read

    async def _wait_exit(self, timeout_s: float | None) -> bool:
        """Wait up to ``timeout_s`` for the leader to exit; True if it did."""
        assert self._proc is not None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._proc.returncode is None:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_EXIT_POLL_S / 5)
        return True

    def _kill_group(self, sig: signal.Signals, tree: Sequence[int] = ()) -> None:
        """Signal the agent's group, and each process of ``tree`` with its own group."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
        groups: set[int] = set()
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                groups.add(os.getpgid(pid))
                os.kill(pid, sig)
        for group in groups - {self._proc.pid, os.getpgrp()}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)

    async def stop(self) -> None:
        """Stop the agent and everything it started: SIGTERM, the grace, then SIGKILL.

        Tool processes usually share the agent's process group, but not always:
        Claude Code runs its Bash tool in a new session. So the agent's descendants
        are collected first (while they are still its descendants) and signalled
        with their groups.
        """
        if self._proc is None:
            return
        self._stopped = True
        tree = descendants(self._proc.pid)
        self._kill_group(signal.SIGTERM, tree)
        try:
            if not await self._wait_exit(self.spec.kill_grace_s):
                log.warning("agent pid %s ignored SIGTERM; sending SIGKILL", self._proc.pid)
        finally:
            self._kill_group(signal.SIGKILL, [*tree, *descendants(self._proc.pid)])
        await self._wait_exit(None)

    async def wait(self) -> ProcessExit:
        """Wait for the exit (bounded by the deadline) and describe it."""
        assert self._proc is not None
        if not await self._wait_exit(self._remaining_s()):
            self._timed_out = True
            await self.stop()
        # Stragglers in the group would keep resources (and our pipes) alive.
        self._kill_group(signal.SIGKILL)
        for task in self._tasks:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), self.spec.drain_after_exit_s)
        return ProcessExit(
            returncode=self._proc.returncode,
            timed_out=self._timed_out,
            stopped=self._stopped,
            stderr_tail=_decode(self._stderr),
            duration_s=time.monotonic() - self._started,
            truncated_lines=self._truncated,
        )


def descendants(pid: int) -> list[int]:
    """The live descendants of ``pid``, from Linux's /proc (empty where there is none)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields and fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(name))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")
