"""Agent engines: one protocol (``base.Engine``) and one module per agent tool.

Engines are looked up by name through :func:`create_engine`; each is imported only
when asked for, so ``import loops`` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loops import errors
from loops.engines.base import Engine

if TYPE_CHECKING:
    from loops.engines.fallback import FallbackPolicy

#: engine name -> "module:factory"; the factory takes keyword options.
REGISTRY: dict[str, str] = {
    "claude": "loops.engines.claude:ClaudeEngine.from_options",
    "codex": "loops.engines.codex:CodexEngine.from_options",
    "command": "loops.engines.command:CommandEngine.from_options",
    "fallback": "loops.engines.fallback:FallbackEngine.from_options",
    "gemini": "loops.engines.gemini:GeminiEngine.from_options",
    "mock": "loops.engines.mock:MockEngine.from_options",
    "openai": "loops.engines.openai:OpenAIEngine.from_options",
    "opencode": "loops.engines.opencode:OpenCodeEngine.from_options",
    "replay": "loops.engines.replay:ReplayEngine.from_options",
}


def engine_names() -> list[str]:
    """The names :func:`create_engine` accepts, sorted."""
    return sorted(REGISTRY)


def create_engine(name: str, **options: Any) -> Engine:
    """Build the engine registered under ``name``.

    Raises:
        ConfigError: the name is not registered; the message lists the valid ones.
    """
    target = REGISTRY.get(name)
    if target is None:
        raise errors.ConfigError(
            f"unknown engine {name!r}; choose one of: {', '.join(engine_names())}"
        )
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    engine: Engine = obj(**options)
    return engine


def compose(
    engine: Engine,
    *,
    fallbacks: Sequence[Engine] = (),
    fallback_policy: FallbackPolicy | None = None,
    record_dir: Path | None = None,
) -> Engine:
    """``engine`` with fallbacks, a USD cap and recording, as the settings ask.

    The worker and the loop library both build their engines through here, so
    ``--fallback``, ``--max-usd`` and ``--record`` mean the same everywhere.

    Args:
        engine: the primary engine.
        fallbacks: engines to move a rate-limited turn to, in order.
        fallback_policy: limits and spending (a cap alone also wraps the engine).
        record_dir: record every turn there (:mod:`loops.engines.recording`).
    """
    if fallbacks or (fallback_policy is not None and fallback_policy.max_usd is not None):
        from loops.engines.fallback import FallbackEngine

        engine = FallbackEngine(engine, fallbacks, fallback_policy)
    if record_dir is not None:
        from loops.engines.recording import RecordingEngine

        engine = RecordingEngine(engine, record_dir)
    return engine
