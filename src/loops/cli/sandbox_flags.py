"""The sandbox flags shared by ``loop worker`` and ``loop run``.

``--sandbox none|bwrap`` confines the agent and the check command; ``--check-network
shared|none`` says whether the check keeps the host's network (cut off by default: a
check runs the agent's code and needs no model API). Both are checked once here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from loops.engines import sandbox as sandbox_mod
from loops.engines.sandbox import Sandbox


class _SandboxChoice(click.Choice[str]):
    """``click.Choice`` of the sandbox kinds that names why ``docker`` is refused."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value == "docker":
            self.fail(sandbox_mod.DOCKER_UNSUPPORTED, param, ctx)
        return str(super().convert(value, param, ctx))


def sandbox_flags(*, scope: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--sandbox`` and ``--check-network``, their help prefixed by ``scope``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option(
            "--check-network",
            type=click.Choice(sandbox_mod.NETWORKS),
            help=f"{scope}With --sandbox: whether the check command shares the host's "
            "network. Default none (cut off): the check runs code the agent wrote and "
            "needs no model API.",
        )(fn)
        return click.option(
            "--sandbox",
            type=_SandboxChoice(sandbox_mod.KINDS),
            default="none",
            show_default=True,
            help=f"{scope}Run the agent and the check command under bubblewrap: cwd "
            "writable, rest read-only, private /tmp, homes hidden, environment filtered "
            "(see SECURITY.md). Docker is not supported.",
        )(fn)

    return decorate


def sandbox_from_flags(sandbox: str, check_network: str | None) -> tuple[Sandbox | None, bool]:
    """The sandbox the flags ask for and whether its check shares the network.

    A sandbox that cannot start here is refused now rather than failing every task.

    Raises:
        click.BadParameter: ``--check-network`` without a sandbox.
        SandboxUnavailable: bwrap is missing or cannot create its namespaces here.
    """
    box = Sandbox.parse(sandbox)
    if box is None:
        if check_network is not None:
            raise click.BadParameter(
                "--check-network needs --sandbox bwrap: without a sandbox the check command "
                "always shares the host's network",
                param_hint="--check-network",
            )
        return None, False
    sandbox_mod.require_bwrap()
    return box, sandbox_mod.parse_network(check_network or "none")
