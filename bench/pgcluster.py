"""A throwaway PostgreSQL cluster on a free 127.0.0.1 port, for a suite run without one.

``initdb`` and ``pg_ctl`` come from /usr/lib/postgresql/*/bin (Debian's layout) or the
PATH; as root they run as the ``postgres`` user (PostgreSQL refuses to run as root). The
cluster keeps PostgreSQL's durable defaults (fsync on), so its figures compare with a
normal server's; it lives in a temporary folder removed by :meth:`Cluster.stop`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

#: seconds initdb or pg_ctl may take
TOOL_TIMEOUT_S = 120


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ClusterError(Exception):
    """The throwaway cluster could not be made or started."""


class Cluster:
    """A PostgreSQL cluster this process started (see the module docstring)."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            raise ClusterError("no initdb/pg_ctl (install Debian's postgresql package)")
        as_root = os.geteuid() == 0
        if as_root and shutil.which("runuser") is None:
            raise ClusterError("running as root without runuser to become the postgres user")
        self.bindir = bindir
        self.as_root = as_root
        self.root = Path(tempfile.mkdtemp(prefix="loops-bench-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"
        self.started = False

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bindir / tool), *args]
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterError(f"{tool}: {exc}") from exc
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise ClusterError(f"{tool} failed: {last[0]}")

    def start(self) -> str:
        """Create and start the cluster; its server URL (no database name)."""
        if self.as_root:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-w", "-o", options,
                  "-l", str(self.root / "server.log"), "start")  # fmt: skip
        self.started = True
        return self.url

    def stop(self) -> None:
        """Stop the server (if started) and remove its folder."""
        if self.started:
            # the folder is removed below all the same
            with contextlib.suppress(ClusterError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "stop")
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)
