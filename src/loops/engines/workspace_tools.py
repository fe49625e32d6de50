"""The tools of the ``openai`` engine's agent, confined to one working directory.

Every path a model names is resolved against the workspace root with symlinks
followed, and refused unless the result is inside the root: ``../x``, ``/etc/passwd``
and a symlink pointing out are all refused the same way. Commands are argv lists the
model gives as JSON arrays; no shell ever runs model text (a model that wants a shell
must ask for ``["sh", "-c", "..."]`` explicitly, which ``workspace-write`` allows like
any other program). They run in the root, in their own process group, with a
wall-clock limit and bounded output, through the same process layer as the agent
CLIs.

Tool failures never raise: they come back as a :class:`ToolOutcome` with
``is_error`` set, so the model sees the error and can go on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import glob
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from loops import errors
from loops.engines import base, process
from loops.engines.sandbox import Sandbox

#: directories never listed or searched
SKIPPED_DIRS = frozenset({".git", "node_modules", "__pycache__", ".venv", ".mypy_cache"})
#: tools that only read
READ_TOOLS = ("read_file", "list_dir", "search")
#: tools that change the workspace or run programs
WRITE_TOOLS = ("write_file", "edit_file", "run_command")
ALL_TOOLS = READ_TOOLS + WRITE_TOOLS


@dataclasses.dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What a tool returns to the model."""

    output: str
    is_error: bool = False


class ToolRefused(Exception):
    """A tool call is refused (bad path, bad argument); its message goes to the model."""


@dataclasses.dataclass(frozen=True, slots=True)
class ToolLimits:
    """Bounds on what tools do and return.

    Attributes:
        max_output_bytes: cap on one tool result (the rest is cut, with a note).
        command_timeout_s: default wall-clock limit of ``run_command``.
        max_command_timeout_s: the largest limit a model may ask for.
        max_list_entries: cap on ``list_dir`` entries.
        max_search_matches: cap on ``search`` matches.
        max_read_bytes: files larger than this are read in part (use offset/limit).
    """

    max_output_bytes: int = 32 * 1024
    command_timeout_s: float = 120.0
    max_command_timeout_s: float = 1800.0
    max_list_entries: int = 500
    max_search_matches: int = 200
    max_read_bytes: int = 256 * 1024


def tools_for(permission: base.Permission, names: tuple[str, ...] | None) -> tuple[str, ...]:
    """The tools offered at ``permission``, limited to ``names`` when given."""
    offered = READ_TOOLS if permission is base.Permission.READ_ONLY else ALL_TOOLS
    if names is None:
        return offered
    return tuple(name for name in offered if name in names)


def schemas(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The chat-completions ``tools`` array for ``names``."""
    return [{"type": "function", "function": _SCHEMAS[name]} for name in names]


class Workspace:
    """The tools, bound to a root directory and an environment for commands.

    Args:
        root: the working directory; every path must resolve inside it.
        env: the complete environment of commands.
        limits: the bounds.
        sandbox: run ``run_command``'s programs under this sandbox (the turn's, e.g.
            a ``loop worker --sandbox bwrap``'s); ``None``: unconfined.
    """

    def __init__(
        self,
        root: Path,
        *,
        env: Mapping[str, str],
        limits: ToolLimits | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.root = root.resolve()
        self.env = dict(env)
        self.limits = limits or ToolLimits()
        self.sandbox = sandbox
        self._tools: dict[str, Callable[[dict[str, Any]], Awaitable[str]]] = {
            "read_file": self.read_file,
            "write_file": self.write_file,
            "edit_file": self.edit_file,
            "list_dir": self.list_dir,
            "search": self.search,
            "run_command": self.run_command,
        }

    async def call(
        self, name: str, arguments: dict[str, Any], offered: tuple[str, ...]
    ) -> ToolOutcome:
        """Run tool ``name``; refusals and failures come back as error outcomes."""
        if name not in offered:
            available = ", ".join(offered) or "none"
            return ToolOutcome(f"error: unknown tool {name!r}; available: {available}", True)
        try:
            output = await self._tools[name](arguments)
        except ToolRefused as exc:
            return ToolOutcome(f"error: {exc}", True)
        except OSError as exc:
            return ToolOutcome(f"error: {exc.strerror or exc}", True)
        return ToolOutcome(self._bounded(output))

    def _bounded(self, text: str) -> str:
        data = text.encode()
        limit = self.limits.max_output_bytes
        if len(data) <= limit:
            return text
        head = data[:limit].decode(errors="ignore")
        return f"{head}\n[output cut: {len(data) - limit} more bytes]"

    def resolve(self, raw: object, *, must_exist: bool = False) -> Path:
        """The absolute path ``raw`` names, refused unless inside the root.

        Raises:
            ToolRefused: not a string, outside the root (symlinks followed), or missing.
        """
        if not isinstance(raw, str) or not raw or "\x00" in raw:
            raise ToolRefused("path must be a non-empty string")
        path = (self.root / raw).resolve()
        if path != self.root and not path.is_relative_to(self.root):
            raise ToolRefused(f"{raw} is outside the working directory; use a path inside it")
        if must_exist and not path.exists():
            raise ToolRefused(f"{raw} does not exist")
        return path

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path != self.root else "."

    async def read_file(self, args: dict[str, Any]) -> str:
        """``{path, offset?, limit?}``: the file's lines, numbered from ``offset`` (1-based)."""
        path = self.resolve(args.get("path"), must_exist=True)
        if path.is_dir():
            raise ToolRefused(f"{args.get('path')} is a directory; use list_dir")
        offset = _int_arg(args, "offset", 1, minimum=1)
        limit = _int_arg(args, "limit", 2000, minimum=1)
        data = await asyncio.to_thread(_read_head, path, self.limits.max_read_bytes)
        if b"\x00" in data[:8192]:
            raise ToolRefused(f"{args.get('path')} is a binary file")
        lines = data.decode(errors="replace").splitlines()
        chosen = lines[offset - 1 : offset - 1 + limit]
        body = "\n".join(f"{number:6}\t{line}" for number, line in enumerate(chosen, offset))
        if offset - 1 + limit < len(lines):
            body += f"\n[{len(lines) - (offset - 1 + limit)} more lines: read with offset]"
        return body or "(empty file)"

    async def write_file(self, args: dict[str, Any]) -> str:
        """``{path, content}``: create or replace a file (parents are created)."""
        path = self.resolve(args.get("path"))
        content = args.get("content")
        if not isinstance(content, str):
            raise ToolRefused("content must be a string")
        if path.is_dir():
            raise ToolRefused(f"{args.get('path')} is a directory")
        await asyncio.to_thread(_write, path, content)
        return f"wrote {len(content.encode())} bytes to {self._relative(path)}"

    async def edit_file(self, args: dict[str, Any]) -> str:
        """``{path, old, new, replace_all?}``: replace exact text (once, unless replace_all)."""
        path = self.resolve(args.get("path"), must_exist=True)
        old, new = args.get("old"), args.get("new")
        if not isinstance(old, str) or not old or not isinstance(new, str):
            raise ToolRefused("old must be a non-empty string and new a string")
        text = await asyncio.to_thread(path.read_text, errors="strict")
        count = text.count(old)
        if count == 0:
            raise ToolRefused(f"old text not found in {args.get('path')}; read the file first")
        if count > 1 and not args.get("replace_all"):
            raise ToolRefused(
                f"old text occurs {count} times in {args.get('path')}; "
                "give more context or set replace_all"
            )
        replaced = count if args.get("replace_all") else 1
        await asyncio.to_thread(_write, path, text.replace(old, new, replaced))
        return f"replaced {replaced} occurrence(s) in {self._relative(path)}"

    async def list_dir(self, args: dict[str, Any]) -> str:
        """``{path?, recursive?}``: entries, directories with a trailing ``/``."""
        path = self.resolve(args.get("path") or ".", must_exist=True)
        if not path.is_dir():
            raise ToolRefused(f"{args.get('path')} is not a directory")
        entries = await asyncio.to_thread(
            _list, path, bool(args.get("recursive")), self.limits.max_list_entries
        )
        return (
            "\n".join(self._relative(p) + ("/" if p.is_dir() else "") for p in entries) or "(empty)"
        )

    async def search(self, args: dict[str, Any]) -> str:
        """``{pattern, path?, glob?}``: regex matches as ``file:line: text``."""
        pattern = args.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ToolRefused("pattern must be a non-empty regular expression")
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolRefused(f"pattern is not a valid regular expression: {exc}") from exc
        path = self.resolve(args.get("path") or ".", must_exist=True)
        glob = args.get("glob")
        if glob is not None and not isinstance(glob, str):
            raise ToolRefused("glob must be a string such as '*.py'")
        matches = await asyncio.to_thread(
            _search, self.root, path, regex, glob, self.limits.max_search_matches
        )
        return "\n".join(matches) or "no matches"

    async def run_command(self, args: dict[str, Any]) -> str:
        """``{argv, timeout_s?}``: run a program (no shell) in the root; exit code and output."""
        argv = args.get("argv")
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) and "\x00" not in a for a in argv)
        ):
            raise ToolRefused('argv must be a non-empty list of strings, e.g. ["pytest", "-q"]')
        timeout_s = args.get("timeout_s", self.limits.command_timeout_s)
        if not isinstance(timeout_s, int | float) or timeout_s <= 0:
            raise ToolRefused("timeout_s must be a positive number of seconds")
        timeout_s = min(float(timeout_s), self.limits.max_command_timeout_s)
        spec = process.ProcessSpec(
            argv=argv,
            cwd=self.root,
            env=self.env,
            timeout_s=timeout_s,
            kill_grace_s=2.0,
            max_line_bytes=self.limits.max_output_bytes,
            stderr_tail_bytes=self.limits.max_output_bytes,
            drain_after_exit_s=0.5,
            sandbox=self.sandbox,
        )
        try:
            async with process.AgentProcess(spec) as proc:
                output = await _collect(proc, self.limits.max_output_bytes)
                exit = await proc.wait()
        except errors.EngineNotFound as exc:
            raise ToolRefused(f"{argv[0]}: command not found ({exc.message})") from exc
        except errors.InputError as exc:
            raise ToolRefused(exc.message) from exc
        status = f"exit code {exit.returncode}"
        if exit.timed_out:
            status = f"killed after {timeout_s:g}s (timeout)"
        parts = [status]
        if output.strip():
            parts.append(f"stdout:\n{output.rstrip()}")
        if exit.stderr_tail.strip():
            parts.append(f"stderr:\n{exit.stderr_tail.rstrip()}")
        return "\n".join(parts)


async def _collect(proc: process.AgentProcess, limit: int) -> str:
    kept: list[str] = []
    size = 0
    dropped = 0
    async for line in proc.lines():
        if size + len(line) + 1 > limit:
            dropped += len(line) + 1
            continue
        kept.append(line)
        size += len(line) + 1
    text = "\n".join(kept)
    if dropped:
        text += f"\n[stdout cut: {dropped} more bytes]"
    return text


def _read_head(path: Path, limit: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(limit)


def _write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    if path.suffix == ".py":
        _drop_bytecode(path)


def _drop_bytecode(source: Path) -> None:
    """Remove ``source``'s cached bytecode, for every interpreter and optimization level.

    Python reuses a ``__pycache__`` entry whose recorded source size and mtime (in whole
    seconds) still match, so a same-length edit made within a second of the run that
    compiled it (a one-character fix right after the failing test run) would otherwise
    go unseen by the next run.
    """
    cache = source.parent / "__pycache__"
    for compiled in cache.glob(f"{glob.escape(source.stem)}.*.pyc"):
        compiled.unlink(missing_ok=True)


def _walk(top: Path) -> list[Path]:
    found: list[Path] = []
    for current, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        base_dir = Path(current)
        found += [base_dir / d for d in dirs]
        found += [base_dir / f for f in sorted(files)]
    return found


def _list(path: Path, recursive: bool, limit: int) -> list[Path]:
    entries = _walk(path) if recursive else sorted(path.iterdir())
    entries = [e for e in entries if e.name not in SKIPPED_DIRS]
    return entries[:limit]


def _search(
    root: Path, top: Path, regex: re.Pattern[str], glob: str | None, limit: int
) -> list[str]:
    files = [top] if top.is_file() else [p for p in _walk(top) if p.is_file()]
    matches: list[str] = []
    for path in files:
        if glob and not fnmatch.fnmatch(path.name, glob):
            continue
        try:
            data = _read_head(path, 2 * 1024 * 1024)
        except OSError:
            continue
        if b"\x00" in data[:8192]:
            continue
        for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
            if regex.search(line):
                matches.append(f"{path.relative_to(root)}:{number}: {line[:300]}")
                if len(matches) >= limit:
                    matches.append(f"[stopped at {limit} matches]")
                    return matches
    return matches


def _int_arg(args: dict[str, Any], name: str, default: int, *, minimum: int) -> int:
    value = args.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ToolRefused(f"{name} must be an integer >= {minimum}")
    return value


_PATH = {"type": "string", "description": "A path relative to the working directory."}
_SCHEMAS: dict[str, dict[str, Any]] = {
    "read_file": {
        "name": "read_file",
        "description": "Read a text file; lines come numbered.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": _PATH,
                "offset": {"type": "integer", "description": "First line (1-based)."},
                "limit": {"type": "integer", "description": "Number of lines."},
            },
            "required": ["path"],
        },
    },
    "write_file": {
        "name": "write_file",
        "description": "Create or overwrite a file with the given content.",
        "parameters": {
            "type": "object",
            "properties": {"path": _PATH, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
    "edit_file": {
        "name": "edit_file",
        "description": "Replace exact text in a file (it must occur once unless replace_all).",
        "parameters": {
            "type": "object",
            "properties": {
                "path": _PATH,
                "old": {"type": "string"},
                "new": {"type": "string"},
                "replace_all": {"type": "boolean"},
            },
            "required": ["path", "old", "new"],
        },
    },
    "list_dir": {
        "name": "list_dir",
        "description": "List a directory (recursive optional); directories end with '/'.",
        "parameters": {
            "type": "object",
            "properties": {"path": _PATH, "recursive": {"type": "boolean"}},
        },
    },
    "search": {
        "name": "search",
        "description": "Search files for a regular expression; answers file:line: text.",
        "parameters": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string"},
                "path": _PATH,
                "glob": {"type": "string", "description": "Only files matching, e.g. *.py."},
            },
            "required": ["pattern"],
        },
    },
    "run_command": {
        "name": "run_command",
        "description": (
            "Run a program in the working directory, without a shell. Give the command as "
            'an argv list, e.g. ["pytest", "-q"]. Answers with the exit code and output.'
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "argv": {"type": "array", "items": {"type": "string"}},
                "timeout_s": {"type": "number"},
            },
            "required": ["argv"],
        },
    },
}
