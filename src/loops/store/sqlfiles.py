"""Loading a backend's SQL: named queries and ordered, versioned migrations."""

from __future__ import annotations

import dataclasses
import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    """One forward-only schema migration.

    Attributes:
        version: its order (the file's 4-digit prefix).
        name: ``0001_init`` style name.
        sql: the statements.
    """

    version: int
    name: str
    sql: str


def queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """The named queries of ``package``'s ``filename`` (``-- name: X`` headers)."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        found[name] = "\n".join(lines).strip()
    return found


def migrations(package: str) -> list[Migration]:
    """The migrations shipped in ``package``, in version order."""
    found = []
    for entry in resources.files(package).iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(
                Migration(
                    version=int(match[1]),
                    name=entry.name.removesuffix(".sql"),
                    sql=entry.read_text(encoding="utf-8"),
                )
            )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {package}: {versions}")
    return found
