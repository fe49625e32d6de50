"""The shape of a job tree, as JSON (``describe --json``) and as readable text."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only annotations: `loop status` renders a shape without the library
    from loops.flow.jobs import Job

#: fields rendered as conditions in the text form
_CONDITION_FIELDS = ("start", "until", "stop_on", "review", "when", "condition")
#: fields left out of a node's header line in the text form
_HIDDEN = frozenset({"name", "kind", "children", "role", "agent", *_CONDITION_FIELDS})


def shape(job: Job) -> dict[str, Any]:
    """The tree: every node has ``name``, ``kind`` and ``children``, plus its own fields."""
    return job.shape()


def to_json(job: Job) -> str:
    """The tree as indented JSON."""
    return json.dumps(shape(job), indent=2, default=str)


def _value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "(" + ", ".join(f"{k}={_value(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, str):
        short = value if len(value) <= 60 else value[:59] + "…"
        return json.dumps(" ".join(short.split()))
    return str(value)


def _condition_lines(condition: Mapping[str, Any], indent: str) -> list[str]:
    lines = [f"{indent}{condition['name']}"]
    for member in condition.get("members", ()):
        lines.extend(_condition_lines(member, indent + "  "))
    return lines


def _node_lines(node: Mapping[str, Any], indent: str) -> list[str]:
    settings = " ".join(
        f"{k}={_value(v)}"
        for k, v in node.items()
        if k not in _HIDDEN and v not in (None, [], False)
    )
    lines = [f"{indent}{node['kind']} {node['name']}" + (f"  {settings}" if settings else "")]
    agent = node.get("agent")
    if agent:
        contract = " ".join(f"{k}={_value(v)}" for k, v in agent.items() if k != "name" and v)
        lines.append(f"{indent}  agent {agent['name']}: {contract}")
    for field in _CONDITION_FIELDS:
        condition = node.get(field)
        if condition:
            lines.append(f"{indent}  {field}:")
            lines.extend(_condition_lines(condition, indent + "    "))
    for child in node.get("children", ()):
        lines.extend(_node_lines(child, indent + "  "))
    return lines


def to_text(job: Job) -> str:
    """The tree as indented lines: ``kind name  settings``, then conditions and children."""
    return "\n".join(_node_lines(shape(job), ""))


def shape_to_text(tree: Mapping[str, Any], indent: str = "") -> str:
    """A tree as :func:`shape` returns it (e.g. read back from JSON), as indented lines."""
    return "\n".join(_node_lines(tree, indent))
