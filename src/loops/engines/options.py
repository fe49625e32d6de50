"""Engine options given as plain keywords (from the CLI, loop files, the registry)."""

from __future__ import annotations

import dataclasses
from typing import Any

from loops import errors
from loops.engines import pricing


def checked(engine: str, options_class: type[Any], options: dict[str, Any]) -> dict[str, Any]:
    """Plain keyword options checked against an options dataclass.

    Args:
        engine: the engine's name, for the message.
        options_class: the engine's options dataclass.
        options: the keyword options; ``extra_args`` becomes a tuple and
            ``price_overrides`` rows become :class:`~loops.engines.pricing.ModelPrice`.

    Raises:
        ConfigError: an option the dataclass does not have.
    """
    fields = {f.name for f in dataclasses.fields(options_class)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise errors.ConfigError(
            f"unknown {engine} engine options {unknown}; allowed: {sorted(fields)}"
        )
    if "extra_args" in options:
        options["extra_args"] = tuple(options["extra_args"])
    prices = options.get("price_overrides")
    if prices:
        options["price_overrides"] = {
            model: p if isinstance(p, pricing.ModelPrice) else pricing.ModelPrice(**p)
            for model, p in prices.items()
        }
    return options
