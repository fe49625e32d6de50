"""Agent engines: one protocol (``base.Engine``) and one module per agent tool.

Engines are looked up by name through :func:`create_engine`; each is imported only
when asked for, so ``import loops`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from loops import errors
from loops.engines.base import Engine

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
