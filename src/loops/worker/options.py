"""How a worker runs: its name, engine, concurrency, timings and logging, in one value."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loops import config, engines, errors
from loops.engines.fallback import FallbackPolicy
from loops.engines.policy import RateLimitPolicy
from loops.engines.sandbox import Sandbox
from loops.flow.confinement import SandboxFloor

#: iterations of a prompt task that names no max_iterations
DEFAULT_MAX_ITERATIONS = 10
#: longest a lease request waits for work before asking again
DEFAULT_WAIT_MS = 10_000


def default_worker_name() -> str:
    """``host:pid``: unique per process, readable in ``loop status``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerOptions:
    """A worker's settings (built from :class:`~loops.config.WorkerSettings` and flags).

    Attributes:
        name: the lease owner name.
        provider: the engine for tasks that name none (``claude``, ``codex``, ``mock``,
            ``command``); a task's own ``provider`` wins.
        engine_options: options for ``provider``'s engine (a mock script, a command).
        concurrency: tasks run at once.
        lease_ttl_ms: the lease TTL asked for; heartbeats come every third of it.
        poll_ms: the fallback interval after a failed lease request.
        wait_ms: how long one lease request long-polls for work.
        shutdown_grace_ms: on SIGTERM, how long running agents may finish before their
            process groups are killed and their leases released.
        stream_job_logs: echo agent output live to stderr.
        max_iterations: iterations of a task that names none.
        cwd: the working directory of tasks that name none.
        rate_limits: how long a turn waits out rate limits.
        types: lease only tasks of these types (``None``: any).
        fallbacks: engines a rate-limited turn moves to, in order (``--fallback``).
        fallback_policy: wait or move on at a limit, and the USD cap across engines.
        engine_settings: engine name -> options, for the fallback engines (and for
            the provider too, under ``engine_options``).
        record_dir: record every agent turn there (``--record``).
        supervise_home: register each task's run in the run registry under this loops
            home (``--supervise``), for ``loop list``/``status``/``tail``/``records``/
            ``watch``; ``None``: not registered.
        sandbox: run every agent process under this sandbox (``--sandbox bwrap``), and
            every check command too (see :attr:`check_sandbox`): a prompt task's, and
            every agent and command gate of a loop file (:attr:`sandbox_floor`).
        check_network: with a sandbox, whether the check command shares the host's
            network (``--check-network shared``); by default it is cut off.
        loop_dirs: with a sandbox, the folders of the loop files it trusts
            (``--loop-dir``): it runs loop tasks only for files there, and no task whose
            cwd overlaps one (see :mod:`loops.worker.loop_dirs`).
    """

    name: str = dataclasses.field(default_factory=default_worker_name)
    provider: str | None = None
    engine_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    concurrency: int = 1
    lease_ttl_ms: int = 120_000
    poll_ms: int = 2_000
    wait_ms: int = DEFAULT_WAIT_MS
    shutdown_grace_ms: int = 10_000
    stream_job_logs: bool = False
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    cwd: Path = dataclasses.field(default_factory=Path.cwd)
    rate_limits: RateLimitPolicy = dataclasses.field(default_factory=RateLimitPolicy)
    types: tuple[str, ...] | None = None
    fallbacks: tuple[str, ...] = ()
    fallback_policy: FallbackPolicy = dataclasses.field(default_factory=FallbackPolicy)
    engine_settings: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    record_dir: Path | None = None
    supervise_home: Path | None = None
    sandbox: Sandbox | None = None
    check_network: bool = False
    loop_dirs: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.provider is not None and self.provider not in engines.REGISTRY:
            raise errors.ConfigError(
                f"unknown provider {self.provider!r}; choose one of: "
                f"{', '.join(engines.engine_names())}"
            )
        unknown = [name for name in self.fallbacks if name not in engines.REGISTRY]
        if unknown:
            raise errors.ConfigError(
                f"unknown fallback engine {', '.join(map(repr, unknown))}; choose from: "
                f"{', '.join(engines.engine_names())}"
            )
        if self.concurrency < 1:
            raise errors.ConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.lease_ttl_ms < 100:
            raise errors.ConfigError(f"lease TTL must be >= 100 ms, got {self.lease_ttl_ms}")
        if self.max_iterations < 1:
            raise errors.ConfigError(f"max iterations must be >= 1, got {self.max_iterations}")
        if self.loop_dirs and self.sandbox is None:
            raise errors.ConfigError(
                "--loop-dir needs --sandbox bwrap: without a sandbox the worker runs loop "
                "files from anywhere, and its agents can write anywhere its user can"
            )

    @property
    def sandbox_floor(self) -> SandboxFloor | None:
        """The least confinement of every agent and command of every task's run.

        Whatever the task or its loop file asks: see :mod:`loops.flow.confinement`.
        ``None`` without :attr:`sandbox`.
        """
        return SandboxFloor.of(self.sandbox, check_network=self.check_network)

    @property
    def check_sandbox(self) -> Sandbox | None:
        """The sandbox a task's check command runs in (``None`` without :attr:`sandbox`)."""
        floor = self.sandbox_floor
        return None if floor is None else floor.check

    @property
    def heartbeat_interval_s(self) -> float:
        """A third of the lease TTL."""
        return self.lease_ttl_ms / 3000

    @classmethod
    def from_settings(cls, settings: config.WorkerSettings, **changes: Any) -> WorkerOptions:
        """Options from the resolved settings, with ``changes`` (CLI flags) on top."""
        base: dict[str, Any] = {
            "lease_ttl_ms": settings.lease_ttl_ms,
            "poll_ms": settings.poll_ms,
            "shutdown_grace_ms": settings.shutdown_grace_ms,
        }
        base.update({k: v for k, v in changes.items() if v is not None})
        return cls(**base)
