"""Agents and skills: a worker persona with its contract, and methodologies in prose.

A skill (:func:`define_skill`) is a method: instructions only, it never dispatches.
An agent (:func:`define_agent`) is a worker: a persona (its system prompt), a model,
its tools, and contract fields (tier, capabilities, outputs, human gates, failure
modes) that are metadata for ``describe`` and ``validate``, with no scheduling power:
the dag orchestrates, agents only work.

The system prompt of an agent's turn is built in this order: the persona (the
``agent_job``'s inline ``system`` replaces the agent's), then each of the agent's
skills in the order listed, each under a ``## Skill: <name>`` heading.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from loops import errors
from loops.flow import paths
from loops.flow.outcome import SEVERITIES


def from_file(path: str | Path) -> str:
    """The text of ``path``, resolved against the loop file's folder.

    Raises:
        ConstructionError: the file does not exist or cannot be read as UTF-8 text.
    """
    resolved = paths.resolve(path)
    try:
        return resolved.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise errors.ConstructionError(f"from_file: {resolved} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConstructionError(f"from_file: cannot read {resolved}: {exc}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Skill:
    """A methodology in prose (how to work), folded into an agent's system prompt."""

    name: str
    instructions: str


@dataclasses.dataclass(frozen=True, slots=True)
class Agent:
    """A worker persona and its contract; see :func:`define_agent` for the fields."""

    name: str
    system: str | None = None
    model: str | None = None
    tools: tuple[str, ...] | None = None
    leaf: bool = False
    tier: str | None = None
    capabilities: tuple[str, ...] = ()
    outputs: tuple[Mapping[str, Any], ...] = ()
    skills: tuple[Skill, ...] = ()
    requires_skills: tuple[str, ...] = ()
    uses_skills: tuple[str, ...] = ()
    human_gates: tuple[Mapping[str, Any], ...] = ()
    failure_modes: tuple[Mapping[str, Any], ...] = ()

    def system_prompt(self, inline: str | None = None) -> str | None:
        """The persona (or ``inline`` in its place), then each skill under its heading."""
        parts = [inline if inline is not None else self.system]
        parts += [f"## Skill: {s.name}\n\n{s.instructions.strip()}" for s in self.skills]
        text = "\n\n".join(p.strip() for p in parts if p)
        return text or None

    def contract(self) -> dict[str, Any]:
        """The agent's contract as JSON, for ``describe``."""
        body: dict[str, Any] = {"name": self.name, "leaf": self.leaf}
        for key in ("model", "tier"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if self.tools is not None:
            body["tools"] = list(self.tools)
        body["skills"] = [s.name for s in self.skills]
        for key in ("capabilities", "requires_skills", "uses_skills"):
            if getattr(self, key):
                body[key] = list(getattr(self, key))
        for key in ("outputs", "human_gates", "failure_modes"):
            if getattr(self, key):
                body[key] = [dict(item) for item in getattr(self, key)]
        return body


@dataclasses.dataclass
class Definitions:
    """The skills and agents defined while one loop file is imported."""

    skills: dict[str, Skill] = dataclasses.field(default_factory=dict)
    agents: dict[str, Agent] = dataclasses.field(default_factory=dict)


_DEFINITIONS: contextvars.ContextVar[Definitions | None] = contextvars.ContextVar(
    "loops_definitions", default=None
)


@contextlib.contextmanager
def collecting() -> Iterator[Definitions]:
    """Collect definitions made inside the block (a loop file's import)."""
    found = Definitions()
    token = _DEFINITIONS.set(found)
    try:
        yield found
    finally:
        _DEFINITIONS.reset(token)


def unknown_skills(found: Definitions) -> list[str]:
    """Problems with skills named by agents but defined nowhere, one line each."""
    problems = []
    for agent in found.agents.values():
        for field in ("requires_skills", "uses_skills"):
            for name in getattr(agent, field):
                if name not in found.skills and name not in {s.name for s in agent.skills}:
                    problems.append(
                        f"agent {agent.name!r} lists {name!r} in {field}, but no define_skill() "
                        f"defines it (skills: {', '.join(found.skills) or 'none'})"
                    )
    return problems


def _name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise errors.ConstructionError(f"{kind} needs a name, got {name!r}")
    return name


def define_skill(*, name: str, instructions: str) -> Skill:
    """A methodology in prose, e.g. ``define_skill(name="tdd", instructions=from_file(...))``.

    Raises:
        ConstructionError: no name, empty instructions, or a second skill with this name
            in the same loop file.
    """
    _name("define_skill()", name)
    if not isinstance(instructions, str) or not instructions.strip():
        raise errors.ConstructionError(f"skill {name!r} needs instructions (text)")
    skill = Skill(name, instructions)
    found = _DEFINITIONS.get()
    if found is not None:
        if name in found.skills:
            raise errors.ConstructionError(f"a skill named {name!r} is already defined")
        found.skills[name] = skill
    return skill


def _strings(field: str, values: Sequence[str] | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise errors.ConstructionError(f"{field}= takes a list of strings, got {values!r}")
    return tuple(values)


def _records(field: str, values: Sequence[Any] | None, key: str) -> tuple[Mapping[str, Any], ...]:
    out: list[Mapping[str, Any]] = []
    for value in values or ():
        record = {key: value} if isinstance(value, str) else value
        if not isinstance(record, Mapping) or key not in record:
            raise errors.ConstructionError(f"each {field} entry needs {key!r}, got {value!r}")
        severity = record.get("severity")
        if severity is not None and severity not in SEVERITIES:
            raise errors.ConstructionError(
                f"{field} severity {severity!r} is unknown; use one of: {', '.join(SEVERITIES)}"
            )
        out.append(dict(record))
    return tuple(out)


def define_agent(
    *,
    name: str,
    system: str | None = None,
    model: str | None = None,
    tools: Sequence[str] | None = None,
    leaf: bool = False,
    tier: str | None = None,
    capabilities: Sequence[str] | None = None,
    outputs: Sequence[str | Mapping[str, Any]] | None = None,
    skills: Sequence[Skill] | None = None,
    requires_skills: Sequence[str] | None = None,
    uses_skills: Sequence[str] | None = None,
    human_gates: Sequence[str | Mapping[str, Any]] | None = None,
    failure_modes: Sequence[Mapping[str, Any]] | None = None,
) -> Agent:
    """A worker persona, handed to ``agent_job(agent=...)``.

    Args:
        name: the agent's name (unique in a loop file).
        system: the persona, its system prompt (often ``from_file("agents/x.md")``).
        model: its model; tools: the tools it may use (its permission boundary).
        leaf: withhold the sub-agent tool, so it cannot fan out into a swarm.
        tier, capabilities, outputs, requires_skills, uses_skills, human_gates,
            failure_modes: contract metadata, shown by ``describe`` and checked by
            ``validate``; they change nothing at run time.
        skills: methodologies folded into its system prompt, in this order.

    Raises:
        ConstructionError: a missing name, a duplicate skill, a malformed contract field,
            or a second agent with this name in the same loop file.
    """
    _name("define_agent()", name)
    skill_list = tuple(skills or ())
    if not all(isinstance(s, Skill) for s in skill_list):
        raise errors.ConstructionError(f"agent {name!r}: skills= takes define_skill(...) values")
    seen = [s.name for s in skill_list]
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise errors.ConstructionError(f"agent {name!r} lists skill {duplicates[0]!r} twice")
    agent = Agent(
        name=name,
        system=system,
        model=model,
        tools=None if tools is None else _strings("tools", tools),
        leaf=bool(leaf),
        tier=tier,
        capabilities=_strings("capabilities", capabilities),
        outputs=_records("outputs", outputs, "name"),
        skills=skill_list,
        requires_skills=_strings("requires_skills", requires_skills),
        uses_skills=_strings("uses_skills", uses_skills),
        human_gates=_records("human_gates", human_gates, "name"),
        failure_modes=_records("failure_modes", failure_modes, "mode"),
    )
    found = _DEFINITIONS.get()
    if found is not None:
        if name in found.agents:
            raise errors.ConstructionError(f"an agent named {name!r} is already defined")
        found.agents[name] = agent
    return agent
