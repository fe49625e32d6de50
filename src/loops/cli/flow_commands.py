"""``loop validate``, ``loop describe`` and ``loop run``: the loop library's commands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from loops import engines, errors
from loops.cli import run_display
from loops.cli.engine_flags import composition, engine_flags
from loops.cli.sandbox_flags import sandbox_flags, sandbox_from_flags
from loops.engines import base
from loops.flow import describe as describe_mod
from loops.flow import loopfile
from loops.flow.agent_job import AgentJob
from loops.flow.conditions import walk
from loops.flow.jobs import Job
from loops.flow.judge import AgentCheck

#: exit code of ``loop run`` when interrupted (Ctrl-C)
EXIT_INTERRUPTED = run_display.EXIT_INTERRUPTED


def unknown_engines(job: Job) -> list[str]:
    """Engine names used in the tree that no registered engine answers to."""
    names: set[str] = set()
    stack = [job]
    while stack:
        current = stack.pop()
        if isinstance(current, AgentJob) and isinstance(current.engine, str):
            names.add(current.engine)
        for own in current.conditions():
            for condition in walk(own):
                if isinstance(condition, AgentCheck) and isinstance(condition.engine, str):
                    names.add(condition.engine)
        stack.extend(child.job for child in current.children())
    return sorted(n for n in names if n not in engines.REGISTRY)


@click.command("validate")
@click.argument("file")
def validate_command(file: str) -> None:
    """Import and construct a loop FILE without running it; print its shape.

    No engine is started and no model is called.
    """
    loaded = loopfile.load(file)
    unknown = unknown_engines(loaded.job)
    if unknown:
        raise errors.LoopFileError(
            f"{loaded.path}: unknown engine {', '.join(map(repr, unknown))}; "
            f"choose one of: {', '.join(engines.engine_names())}"
        )
    click.echo(f"ok: {loaded.path} defines {loaded.job.kind} {loaded.job.name!r}")
    click.echo(describe_mod.to_text(loaded.job))


@click.command("describe")
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Print the shape as a JSON tree.")
def describe_command(file: str, as_json: bool) -> None:
    """Print the shape of a loop FILE (its loops, dags, gates and agents)."""
    loaded = loopfile.load(file)
    click.echo(describe_mod.to_json(loaded.job) if as_json else describe_mod.to_text(loaded.job))


@click.command("run")
@click.argument("target", metavar="FILE_OR_PROMPT")
@click.option("--no-tui", is_flag=True, help="Print plain log lines instead of the live UI.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's events as NDJSON.")
@click.option("--engine", help="Run every agent on this engine (e.g. mock for offline runs).")
@click.option(
    "--supervise",
    is_flag=True,
    help="Register the run under LOOPS_HOME/runs for loop list/status/tail/records/watch.",
)
@click.option(
    "--cwd",
    type=click.Path(file_okay=False, path_type=Path),
    help="Working directory of the run (default: the current one).",
)
@click.option("--success", help="Prompt runs: success criteria, judged by a separate judge turn.")
@click.option("--check", help="Prompt runs: a command that must succeed (run as argv, no shell).")
@click.option("--max-iterations", type=click.IntRange(min=1), help="Prompt runs: turn limit.")
@click.option("--min-tests", type=click.IntRange(min=0), help="Prompt runs: fewest tests run.")
@click.option("--model", help="Prompt runs: the model for the provider.")
@click.option("--mock-script", type=click.Path(dir_okay=False, path_type=Path),
              help="Prompt runs with --provider mock: a JSON script of turns.")  # fmt: skip
@click.option("--agent-command", help="Prompt runs with --provider command: the agent command.")
@click.option("--provider", help="Prompt runs: the engine (claude, codex, gemini, opencode, "
              "openai, mock, command).")  # fmt: skip
@sandbox_flags(scope="Prompt runs (in a loop file use agent_job(sandbox='bwrap') and "
               "command_succeeds(sandbox='bwrap')): ")  # fmt: skip
@click.option(
    "--replay",
    "replay_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Play the agent turns recorded with --record in this directory back (no model).",
)
@engine_flags
def run_command(
    target: str,
    no_tui: bool,
    as_json: bool,
    engine: str | None,
    supervise: bool,
    cwd: Path | None,
    replay_dir: Path | None,
    fallback: str | None,
    on_limit: str,
    max_usd: float | None,
    record_dir: Path | None,
    base_url: str | None,
    **prompt_flags: Any,
) -> None:
    """Run a loop FILE (ending in .loop.py), or a prompt as a converge loop.

    Exits 0 on pass, 1 on fail or error, 2 on an invalid file or usage, 3 when paused
    (a prompt run: 0 when its task is done, 1 when it failed or is blocked).
    """
    workdir = (cwd or Path.cwd()).expanduser()
    if not workdir.is_dir():
        raise click.BadParameter(f"{workdir} is not a directory", param_hint="--cwd")
    if engine is not None and engine not in engines.REGISTRY:
        raise click.BadParameter(
            f"unknown engine {engine!r}; choose one of: {', '.join(engines.engine_names())}",
            param_hint="--engine",
        )
    if replay_dir is not None and (engine or prompt_flags.get("provider")):
        raise click.BadParameter(
            "--replay plays a recording back; drop --engine/--provider", param_hint="--replay"
        )
    if replay_dir is not None and not replay_dir.is_dir():
        raise click.BadParameter(f"{replay_dir} is not a directory", param_hint="--replay")
    sandbox, check_network = prompt_flags.pop("sandbox"), prompt_flags.pop("check_network")
    if _names_loop_file(target) and (sandbox != "none" or check_network is not None):
        raise click.BadParameter(
            "--sandbox and --check-network apply to prompt runs; in a loop file pass "
            "agent_job(sandbox='bwrap') and command_succeeds(sandbox='bwrap', network=...)",
            param_hint="--sandbox",
        )
    box, check_shares_network = sandbox_from_flags(sandbox, check_network)
    chosen = "replay" if replay_dir else (prompt_flags.get("provider") or engine)
    composed = composition(
        chosen,
        fallback=fallback,
        on_limit=on_limit,
        max_usd=max_usd,
        record_dir=record_dir,
        base_url=base_url,
    )
    display = run_display.choose_display(as_json=as_json, no_tui=no_tui)
    if not _names_loop_file(target):
        from loops.cli import prompt_run

        options = prompt_run.options_from_flags(
            workdir,
            engine=engine,
            display=display,
            replay_dir=replay_dir,
            composition=composed,
            supervise=supervise,
            sandbox=box,
            check_network=check_shares_network,
            **prompt_flags,
        )
        sys.exit(prompt_run.run_prompt(target, options))
    sys.exit(
        run_loop_file(
            Path(target),
            cwd=workdir,
            engine="replay" if replay_dir else engine,
            engine_options={"dir": str(replay_dir.resolve())} if replay_dir else None,
            display=display,
            supervise=supervise,
            wrap_engine=_wrapper(composed),
        )
    )


def _wrapper(composed: dict[str, Any]) -> Callable[[base.Engine], base.Engine] | None:
    """The engine wrapper of a loop-file run: fallbacks, the USD cap, recording."""
    names: tuple[str, ...] = composed["fallbacks"]
    policy = composed["fallback_policy"]
    record_dir: Path | None = composed["record_dir"]
    settings: dict[str, dict[str, Any]] = composed["engine_settings"]
    if not names and policy.max_usd is None and record_dir is None:
        return None

    def wrap(engine: base.Engine) -> base.Engine:
        fallbacks = [
            engines.create_engine(name, **settings.get(name, {}))
            for name in names
            if name != engine.name
        ]
        return engines.compose(
            engine, fallbacks=fallbacks, fallback_policy=policy, record_dir=record_dir
        )

    return wrap


def _names_loop_file(target: str) -> bool:
    """Whether ``loop run TARGET`` means a loop file rather than a prompt.

    An existing file ending in ``.loop.py`` is a loop file (DESIGN 13). So is a missing
    one written as a bare path (no spaces), which then fails as "no such loop file"
    instead of being sent to an agent as a prompt.
    """
    if not loopfile.is_loop_file_name(target):
        return False
    return Path(target).expanduser().is_file() or not any(c.isspace() for c in target)


def run_loop_file(
    path: Path,
    *,
    cwd: Path,
    engine: str | None,
    display: run_display.Display = run_display.Display.LOG,
    supervise: bool = False,
    engine_options: dict[str, Any] | None = None,
    wrap_engine: Callable[[base.Engine], base.Engine] | None = None,
) -> int:
    """Load and run a loop file, showing it as ``display`` asks; return the exit code.

    Raises:
        LoopFileError: the file cannot be loaded.
    """
    loaded = loopfile.load(path)
    request = run_display.RunRequest(
        job=loaded.job,
        title=loaded.job.name,
        source=str(loaded.path),
        cwd=cwd,
        engine=engine,
        display=display,
        supervise=supervise,
        engine_options=engine_options,
        wrap_engine=wrap_engine,
    )
    return run_display.execute(request)


def register(group: click.Group) -> None:
    """Add the loop library's commands to the root group."""
    group.add_command(validate_command)
    group.add_command(describe_command)
    group.add_command(run_command)
