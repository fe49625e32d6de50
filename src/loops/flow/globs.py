"""Gitignore-style glob patterns over relative POSIX paths (pure functions, no I/O).

Rules, as in ``.gitignore``: ``*`` and ``?`` stay within one path segment, ``**``
matches any number of segments, a pattern without a slash (``*.py``, ``tests``) matches
at any depth, a leading slash or an inner slash anchors it to the root, a pattern that
matches a directory matches everything under it, and ``!pattern`` excludes again
(the last matching pattern wins).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from loops import errors


@dataclasses.dataclass(frozen=True, slots=True)
class Pattern:
    """One compiled pattern."""

    text: str
    regex: re.Pattern[str]
    negated: bool


def _translate(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            end = body.find("]", i + 2)
            if end == -1:
                out.append(re.escape(char))
                i += 1
                continue
            inner = body[i + 1 : end]
            if inner.startswith("!"):
                inner = "^" + inner[1:]
            out.append("[" + inner.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def compile_pattern(text: str) -> Pattern:
    """Compile one gitignore-style pattern.

    Raises:
        ConstructionError: the pattern is empty.
    """
    raw = text.strip()
    negated = raw.startswith("!")
    if negated:
        raw = raw[1:]
    body = raw.rstrip("/")
    if not body:
        raise errors.ConstructionError(f"glob {text!r} is empty; give a pattern such as 'tests/**'")
    anchored = body.startswith("/") or "/" in body.strip("/")
    body = body.lstrip("/")
    prefix = "" if anchored else "(?:.*/)?"
    # a match on a directory covers everything below it
    regex = re.compile(f"^{prefix}{_translate(body)}(?:/.*)?$")
    return Pattern(text, regex, negated)


def compile_patterns(texts: Iterable[str]) -> tuple[Pattern, ...]:
    """Compile several patterns, in order."""
    return tuple(compile_pattern(t) for t in texts)


def matches(patterns: Sequence[Pattern], path: str) -> bool:
    """Whether the relative POSIX ``path`` is selected by ``patterns`` (last match wins)."""
    selected = False
    for pattern in patterns:
        if pattern.regex.match(path):
            selected = not pattern.negated
    return selected
