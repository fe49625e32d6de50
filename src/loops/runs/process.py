"""Which process a run lives in, and whether that process is still the same one.

A run records its process id, host and the process's start time. A reader on the same
host decides the run is alive when a process with that id exists *and* started at the
recorded time, so a recycled process id does not keep a dead run "running". Where the
start time cannot be read (no ``/proc``), the existence of the id is all we have.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """A process, identified across time.

    Attributes:
        pid: the process id.
        host: the host name it runs on.
        start_ticks: its start time in clock ticks after boot (``/proc/<pid>/stat``
            field 22), or ``None`` where unknown.
    """

    pid: int
    host: str
    start_ticks: int | None


def _stat_fields(pid: int, proc_root: Path) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (state first), or ``None`` when unreadable."""
    try:
        raw = (proc_root / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces or ')'
    return raw[raw.rfind(")") + 2 :].split()


def start_ticks(pid: int, proc_root: Path = Path("/proc")) -> int | None:
    """The start time of process ``pid`` in ticks after boot, or ``None`` when unknown."""
    fields = _stat_fields(pid, proc_root)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def _is_zombie(pid: int, proc_root: Path = Path("/proc")) -> bool:
    fields = _stat_fields(pid, proc_root)
    return bool(fields) and fields[0] in ("Z", "X")  # type: ignore[index]


def current() -> ProcessIdentity:
    """The identity of this process."""
    pid = os.getpid()
    return ProcessIdentity(pid=pid, host=socket.gethostname(), start_ticks=start_ticks(pid))


def _exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def is_alive(identity: ProcessIdentity, *, host: str | None = None) -> bool | None:
    """Whether the process still runs.

    Args:
        identity: the recorded process.
        host: this host's name (default: :func:`socket.gethostname`).

    Returns:
        ``True`` or ``False``; ``None`` when the process is on another host and
        cannot be checked from here.
    """
    if identity.host != (host or socket.gethostname()):
        return None
    if not _exists(identity.pid) or _is_zombie(identity.pid):
        return False
    if identity.start_ticks is None:
        return True
    now_ticks = start_ticks(identity.pid)
    return now_ticks is None or now_ticks == identity.start_ticks
