"""Engine options given as plain keywords (from the CLI, loop files, the registry).

Also the frame the agent-CLI engines share: :class:`CliOptions`, the settings every
one of them has, and :class:`OptionsEngine`, which builds an engine from its options
dataclass (``Engine(options)`` or ``Engine.from_options(**keywords)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar

from loops import errors
from loops.engines import pricing, process


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


@dataclasses.dataclass(frozen=True, slots=True)
class CliOptions:
    """The settings every agent-CLI engine has; each engine's options extend these.

    Attributes:
        executable: the command name or path of the CLI (each engine sets its default).
        env: the agent's base environment (``None``: this process's environment).
        extra_args: more arguments for the CLI; the engine's argv says where they go.
        kill_grace_s: SIGTERM-to-SIGKILL grace when stopping the agent.
        default_timeout_s: wall-clock limit when the request sets none.
    """

    executable: str = ""
    env: Mapping[str, str] | None = None
    extra_args: tuple[str, ...] = ()
    kill_grace_s: float = process.KILL_GRACE_S
    default_timeout_s: float | None = 3600.0


OptionsT = TypeVar("OptionsT")


class OptionsEngine(Generic[OptionsT]):
    """An engine configured by one frozen options dataclass.

    A subclass names itself (``name``) and its dataclass (``options_class``); it is
    built as ``Engine(options)``, ``Engine()`` for the defaults, or from plain
    keywords with :meth:`from_options`.
    """

    name: str
    options_class: ClassVar[type[Any]]

    def __init__(self, options: OptionsT | None = None) -> None:
        self.options: OptionsT = options if options is not None else self.options_class()

    @classmethod
    def from_options(cls, **options: Any) -> Self:
        """Build from plain keyword options (the fields of ``options_class``).

        Raises:
            ConfigError: an option the dataclass does not have.
        """
        return cls(cls.options_class(**checked(cls.name, cls.options_class, options)))
