"""A run's sandbox floor: the least confinement every agent and command of the run gets.

``loop worker --sandbox bwrap`` (and ``loop run --sandbox bwrap``) promises its
operator that agents run under bubblewrap and that check commands run there too, with
the network cut unless ``--check-network shared``. The worker hands that promise to
each run as a :class:`SandboxFloor`, carried by the run's state, and it applies here,
once, to everything the run starts: every agent turn (``agent_job``, judges) and every
command (``command_succeeds`` gates, a judge's ``tests=`` evidence), whatever the loop
file says.

A job that asks for no sandbox gets the floor. A job that asks for one keeps what it
asks only where that is stricter (:meth:`~loops.engines.sandbox.Sandbox.within`): a
loop file cannot weaken the floor (``network=True`` where the operator cut the network,
an extra writable path, more environment). What it asked for beyond the floor is
overridden, and the run says so once per job in a ``sandbox.floor`` event. Without a
floor, each job runs as written.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from loops.engines.sandbox import Sandbox
from loops.flow.events import EventType

if TYPE_CHECKING:
    from loops.flow.context import Context


@dataclasses.dataclass(frozen=True, slots=True)
class SandboxFloor:
    """The least confinement of one run's agents and commands.

    Attributes:
        agent: the sandbox of every agent turn (at least).
        check: the sandbox of every command the run runs (at least): no engine keys,
            the network as the operator chose (cut off by default).
    """

    agent: Sandbox
    check: Sandbox

    @classmethod
    def of(cls, sandbox: Sandbox | None, *, check_network: bool) -> SandboxFloor | None:
        """The floor of a worker's ``--sandbox`` and ``--check-network`` (``None``: none)."""
        if sandbox is None:
            return None
        return cls(agent=sandbox, check=sandbox.for_check(network=check_network))


@dataclasses.dataclass(frozen=True, slots=True)
class Confined:
    """The sandbox something runs in, and what of its own request the floor overrode.

    Attributes:
        sandbox: the sandbox to use (``None``: unconfined, only without a floor).
        overridden: what the request asked beyond the floor, one phrase each.
    """

    sandbox: Sandbox | None
    overridden: tuple[str, ...] = ()


def for_agent(ctx: Context, requested: Sandbox | None, *, subject: str) -> Confined:
    """The sandbox of an agent turn that asked for ``requested``."""
    floor = ctx.run.sandbox_floor
    return _apply(ctx, requested, None if floor is None else floor.agent, subject)


def for_command(ctx: Context, requested: Sandbox | None, *, subject: str) -> Confined:
    """The sandbox of a command (a gate's check, a judge's tests) that asked for ``requested``."""
    floor = ctx.run.sandbox_floor
    return _apply(ctx, requested, None if floor is None else floor.check, subject)


def _apply(
    ctx: Context, requested: Sandbox | None, floor: Sandbox | None, subject: str
) -> Confined:
    if floor is None:
        return Confined(requested)
    if requested is None:
        return Confined(floor)
    confined, overridden = requested.within(floor)
    if overridden:
        _report(ctx, subject, overridden)
    return Confined(confined, overridden)


def _report(ctx: Context, subject: str, overridden: tuple[str, ...]) -> None:
    """Emit ``sandbox.floor`` the first time ``subject`` at this path is overridden."""
    key = (ctx.path_text, subject)
    if key in ctx.run.floor_reported:
        return
    ctx.run.floor_reported.add(key)
    ctx.emit(
        EventType.SANDBOX_FLOOR,
        subject=subject,
        overridden=list(overridden),
        reason=f"{subject} asked for a weaker sandbox than the run's floor (the worker's "
        f"--sandbox/--check-network); overridden: {', '.join(overridden)}",
    )
