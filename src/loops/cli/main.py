"""Entry point of the ``loop`` / ``loops`` command and its one error renderer.

Commands live in modules named in :data:`COMMAND_MODULES`; each module defines
``register(group)`` and adds its commands to a group. :data:`COMMANDS` says which
module defines which command, so a command imports only its own module: ``loop list``
does not pay for FastAPI, the loop library or the worker. Errors are rendered
here, once: a :class:`~loops.errors.LoopsError` prints its cause chain, one line per
cause, to stderr and exits with the error's exit code; a traceback is shown only
with ``-v``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from loops import errors

#: modules that add commands to the root group, in help order
COMMAND_MODULES: tuple[str, ...] = (
    "loops.cli.queue_commands",
    "loops.cli.gateway_commands",
    "loops.cli.worker_commands",
    "loops.cli.flow_commands",
    "loops.cli.runs_commands",
    "loops.cli.git_commands",
    "loops.cli.durable_commands",
)

#: command name -> the module that defines it, in help order (a test keeps this in step
#: with what each module of COMMAND_MODULES registers; a later module wins a name)
COMMANDS: dict[str, str] = {
    "db:migrate": "loops.cli.queue_commands",
    "tasks:create": "loops.cli.queue_commands",
    "tasks:create-child": "loops.cli.queue_commands",
    "tasks:get": "loops.cli.queue_commands",
    "tasks:list": "loops.cli.queue_commands",
    "tasks:cancel": "loops.cli.queue_commands",
    "tasks:requeue": "loops.cli.queue_commands",
    "status": "loops.cli.runs_commands",
    "events:tail": "loops.cli.queue_commands",
    "events:prune": "loops.cli.queue_commands",
    "steps:list": "loops.cli.queue_commands",
    "artifacts:list": "loops.cli.queue_commands",
    "responsibilities:list": "loops.cli.queue_commands",
    "tick": "loops.cli.queue_commands",
    "gateway": "loops.cli.gateway_commands",
    "worker": "loops.cli.worker_commands",
    "run-job": "loops.cli.worker_commands",
    "run": "loops.cli.flow_commands",
    "validate": "loops.cli.flow_commands",
    "describe": "loops.cli.flow_commands",
    "list": "loops.cli.runs_commands",
    "ls": "loops.cli.runs_commands",
    "tail": "loops.cli.runs_commands",
    "records": "loops.cli.runs_commands",
    "watch": "loops.cli.runs_commands",
    "runs:prune": "loops.cli.runs_commands",
    "worktrees:prune": "loops.cli.git_commands",
    "resume": "loops.cli.durable_commands",
    "approve": "loops.cli.durable_commands",
}

#: exit codes by error family (most specific first); anything else exits 1
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (errors.LoopFileError, 2),
    (errors.ConfigError, 2),
)


def load_command(name: str) -> click.Command | None:
    """Import the module that defines command ``name`` and return the command."""
    module = COMMANDS.get(name)
    if module is None:
        return None
    scratch = click.Group()
    importlib.import_module(module).register(scratch)
    return scratch.commands.get(name)


class RootGroup(click.Group):
    """The root group: loads each command on first use and renders errors in one place."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.LoopsError as exc:
            render_error(exc, verbose=bool(ctx.meta.get("loops.verbose")))
            ctx.exit(exit_code_for(exc))


def exit_code_for(exc: BaseException) -> int:
    """The process exit code for ``exc``."""
    for family, code in EXIT_CODES:
        if isinstance(exc, family):
            return code
    return 1


def render_error(exc: BaseException, *, verbose: bool = False) -> None:
    """Print ``exc`` and its causes, one line each, to stderr."""
    if verbose:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
        return
    seen: set[int] = set()
    current: BaseException | None = exc
    prefix = "error: "
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip() or type(current).__name__
        click.echo(f"{prefix}{text}", err=True)
        prefix = "  caused by: "
        current = current.__cause__


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="loops")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """loops: run AI coding agents unattended, durably and honestly."""
    ctx.meta["loops.verbose"] = verbose


def main(argv: list[str] | None = None) -> None:
    """Run the CLI (the console-script entry point)."""
    cli.main(args=argv, prog_name="loop")
