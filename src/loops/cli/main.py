"""Entry point of the ``loop`` / ``loops`` command and its one error renderer.

Commands live in modules named in :data:`COMMAND_MODULES`; each module defines
``register(group)`` and adds its commands to the root group. Errors are rendered
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
)

#: exit codes by error family (most specific first); anything else exits 1
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (errors.LoopFileError, 2),
    (errors.ConfigError, 2),
)


class RootGroup(click.Group):
    """The root group: renders errors in one place."""

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


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(cli)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI (the console-script entry point)."""
    cli.main(args=argv, prog_name="loop")
