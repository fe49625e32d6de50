"""Where relative paths in a loop file resolve: the loop file's folder.

While a loop file is imported, :func:`loading` sets its folder as the base; objects
built during the import (``from_file``, a scripted engine's ``script``) call
:func:`resolve` at construction, so a loop file runs the same from any directory.
Outside a loop file the base is the current directory.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

_BASE: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "loops_loopfile_base", default=None
)

#: engine option keys that name files, resolved like other loop-file paths
PATH_OPTIONS = frozenset({"script"})


def base_dir() -> Path:
    """The folder relative paths resolve against right now."""
    return _BASE.get() or Path.cwd()


@contextlib.contextmanager
def loading(folder: Path) -> Iterator[None]:
    """Resolve relative paths against ``folder`` inside the ``with`` block."""
    token = _BASE.set(folder)
    try:
        yield
    finally:
        _BASE.reset(token)


def resolve(path: str | Path) -> Path:
    """``path`` made absolute against :func:`base_dir` (absolute paths are kept)."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base_dir() / candidate).resolve()


def resolve_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Engine options with file-naming values (see :data:`PATH_OPTIONS`) resolved."""
    out = dict(options or {})
    for key, value in out.items():
        if isinstance(value, Path) or (key in PATH_OPTIONS and isinstance(value, str)):
            out[key] = str(resolve(value))
    return out
