"""The engine flags shared by ``loop run``, ``loop worker`` and ``loop run-job``.

``--fallback ENGINES``, ``--on-limit fallback|wait``, ``--max-usd N``, ``--record DIR``
and ``--base-url URL``, checked once here and turned into the worker options that
:func:`loops.engines.compose` reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from loops import engines


def engine_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--fallback``, ``--on-limit``, ``--max-usd``, ``--record`` and ``--base-url``."""
    fn = click.option(
        "--base-url",
        metavar="URL",
        help="For the openai engine: the OpenAI-compatible API root "
        "(e.g. http://127.0.0.1:11434/v1 for Ollama).",
    )(fn)
    fn = click.option(
        "--record",
        "record_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Record every agent turn (events, raw stream, file changes) in this directory.",
    )(fn)
    fn = click.option(
        "--max-usd",
        type=click.FloatRange(min=0),
        help="USD cap across all engines, per task (per run for a loop file): no agent "
        "turn starts once it is spent.",
    )(fn)
    fn = click.option(
        "--on-limit",
        type=click.Choice(["fallback", "wait"]),
        default="fallback",
        show_default=True,
        help="At a rate or usage limit: move to the next --fallback engine at once, or wait first.",
    )(fn)
    return click.option(
        "--fallback",
        metavar="ENGINES",
        help="Engines to move a rate-limited turn to, in order: e.g. codex,gemini.",
    )(fn)


def composition(
    provider: str | None,
    *,
    fallback: str | None,
    on_limit: str,
    max_usd: float | None,
    record_dir: Path | None,
    base_url: str | None,
) -> dict[str, Any]:
    """The worker options the engine flags ask for (checked, one clear error each)."""
    from loops.engines.fallback import FallbackPolicy

    names = tuple(n.strip() for n in (fallback or "").split(",") if n.strip())
    unknown = [n for n in names if n not in engines.REGISTRY]
    if unknown:
        raise click.BadParameter(
            f"unknown engine {', '.join(map(repr, unknown))}; choose from: "
            f"{', '.join(engines.engine_names())}",
            param_hint="--fallback",
        )
    if base_url is not None and "openai" not in (provider, *names):
        raise click.BadParameter(
            "--base-url is for the openai engine: add --provider openai or --fallback openai",
            param_hint="--base-url",
        )
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{base_url!r} is not an http(s) URL", param_hint="--base-url")
    return {
        "fallbacks": names,
        "fallback_policy": FallbackPolicy(on_limit=on_limit, max_usd=max_usd),  # type: ignore[arg-type]
        "record_dir": record_dir.resolve() if record_dir is not None else None,
        "engine_settings": {"openai": {"base_url": base_url}} if base_url else {},
    }
