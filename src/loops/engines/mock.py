"""The ``mock`` engine: scripted agent turns for tests, demos and offline runs.

A script is a list of :class:`MockTurn`. Each call to ``run_turn`` consumes the first
remaining turn whose ``match`` (a regular expression searched in the prompt) matches,
or which has no ``match``. When none is left, the ``default`` turn is replayed; with
no default, the turn fails as a crash naming the exhausted script.

A turn can write or delete files in the request's cwd (reported as ``Write`` tool
calls), print text (STEP markers included), report usage, sleep, or fail with a
classified error. Scripts load from JSON::

    {"turns": [{"text": "...", "edits": {"src/app.py": "..."}}, ...],
     "default": {"text": "{\\"met\\": true, \\"confidence\\": 1, \\"reason\\": \\"ok\\"}"}}
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from loops import errors
from loops.engines import base, recording
from loops.usage import Usage

#: what each level means for the mock engine (the README's permission table)
PERMISSION_NOTES: dict[base.Permission, str] = {
    level: "ignored (scripted edits are applied inside the cwd)" for level in base.Permission
}
#: error name in a script -> the classified error it produces
ERRORS: dict[str, type[errors.EngineError]] = {
    "rate_limit": errors.EngineRateLimited,
    "auth": errors.EngineAuthError,
    "network": errors.EngineNetworkError,
    "permission": errors.EnginePermissionDenied,
    "max_turns": errors.EngineMaxTurns,
    "crash": errors.EngineCrashed,
    "timeout": errors.EngineTimeout,
    "not_found": errors.EngineNotFound,
}


@dataclasses.dataclass(frozen=True, slots=True)
class MockTurn:
    """One scripted turn.

    Attributes:
        text: the agent's final message.
        edits: relative path -> new content, or ``None`` to delete the file.
        usage: usage reported; by default a token count derived from the text sizes.
        delay_s: sleep this long before answering (cancellable).
        error: one of :data:`ERRORS`' keys to fail the turn that way.
        retry_after_s: with ``error="rate_limit"``, the advertised wait.
        match: consume this turn only for prompts where this regex is found.
    """

    text: str = ""
    edits: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    usage: Usage | None = None
    delay_s: float = 0.0
    error: str | None = None
    retry_after_s: float | None = None
    match: str | None = None

    def __post_init__(self) -> None:
        if self.error is not None and self.error not in ERRORS:
            raise errors.ConfigError(
                f"mock turn error {self.error!r} is unknown; use one of: {', '.join(ERRORS)}"
            )
        if self.match is not None:
            try:
                re.compile(self.match)
            except re.error as exc:
                raise errors.ConfigError(f"mock turn match {self.match!r}: {exc}") from exc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MockTurn:
        """Build a turn from its JSON form; unknown keys are an error."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise errors.ConfigError(
                f"mock turn has unknown keys {sorted(unknown)}; allowed: {sorted(fields)}"
            )
        values = dict(data)
        if isinstance(values.get("usage"), Mapping):
            values["usage"] = Usage.from_dict(values["usage"])
        return cls(**values)


ScriptFn = Callable[[base.TurnRequest, int], MockTurn]


class MockEngine:
    """An engine that plays a script instead of calling a model.

    Args:
        turns: the scripted turns, consumed as described in the module docstring.
        default: replayed once ``turns`` has nothing left for a prompt.
        script: instead of ``turns``, a function ``(request, index) -> MockTurn``.
        name: the engine name shown in events.
    """

    capabilities = base.Capabilities(
        resume=True, streaming=True, cost_reported=True, permissions=()
    )

    def __init__(
        self,
        turns: list[MockTurn] | tuple[MockTurn, ...] = (),
        *,
        default: MockTurn | None = None,
        script: ScriptFn | None = None,
        name: str = "mock",
    ) -> None:
        self.name = name
        self._turns = list(turns)
        self._default = default
        self._script = script
        self._count = 0
        #: every request received, for assertions in tests
        self.requests: list[base.TurnRequest] = []

    @classmethod
    def from_options(
        cls,
        *,
        script: str | Path | None = None,
        turns: list[Mapping[str, Any]] | None = None,
        default: Mapping[str, Any] | None = None,
        **_ignored: Any,
    ) -> MockEngine:
        """Build from plain options: a JSON script file and/or turn dicts.

        With neither, every turn answers with a short text and a passing verdict, so
        an offline run converges at once.
        """
        data: dict[str, Any] = {}
        if script is not None:
            path = Path(script)
            try:
                data = json.loads(path.read_text())
            except FileNotFoundError as exc:
                raise errors.ConfigError(f"mock script {path} does not exist") from exc
            except json.JSONDecodeError as exc:
                raise errors.ConfigError(f"mock script {path} is not valid JSON: {exc}") from exc
        raw_turns = list(data.get("turns", [])) + list(turns or [])
        raw_default = default if default is not None else data.get("default")
        if not raw_turns and raw_default is None:
            raw_default = {
                "text": 'Done.\n{"met": true, "confidence": 1.0, "reason": "mock: no script"}'
            }
        return cls(
            [MockTurn.from_dict(t) for t in raw_turns],
            default=MockTurn.from_dict(raw_default) if raw_default is not None else None,
        )

    def _next_turn(self, request: base.TurnRequest) -> MockTurn | None:
        if self._script is not None:
            return self._script(request, self._count)
        for index, turn in enumerate(self._turns):
            if turn.match is None or re.search(turn.match, request.prompt):
                return self._turns.pop(index)
        return self._default

    async def run_turn(self, request: base.TurnRequest) -> AsyncIterator[base.TurnEvent]:
        """Play the next scripted turn for ``request``."""
        started = time.monotonic()
        self.requests.append(request)
        turn = self._next_turn(request)
        self._count += 1
        session_id = request.resume_session_id or f"mock-session-{self._count}"
        if turn is None:
            yield base.TurnResult(
                status=base.TurnStatus.ERROR,
                session_id=session_id,
                error=errors.EngineCrashed(
                    f"mock script exhausted after {self._count - 1} turns (add turns or a default)"
                ),
            )
            return
        yield base.SessionStarted(session_id)
        if turn.delay_s > 0:
            await asyncio.sleep(turn.delay_s)
        for number, (rel_path, content) in enumerate(turn.edits.items()):
            tool_id = f"mock-tool-{self._count}-{number}"
            yield base.ToolUse(id=tool_id, name="Write", input={"file_path": rel_path})
            yield base.ToolResult(id=tool_id, output=_apply_edit(request.cwd, rel_path, content))
        usage = turn.usage or Usage(
            input_tokens=max(1, len(request.prompt) // 4),
            output_tokens=max(1, len(turn.text) // 4),
            cost_usd=0.0,
        )
        if turn.text:
            yield base.AgentText(turn.text)
        yield base.UsageReport(usage)
        error: errors.EngineError | None = None
        if turn.error is not None:
            message = f"mock engine: scripted {turn.error.replace('_', ' ')}"
            if turn.error == "rate_limit":
                error = errors.EngineRateLimited(message, retry_after_s=turn.retry_after_s)
            else:
                error = ERRORS[turn.error](message)
        yield base.TurnResult(
            status=base.TurnStatus.OK if error is None else base.TurnStatus.ERROR,
            final_text=turn.text,
            session_id=session_id,
            usage=usage,
            error=error,
            num_turns=1,
            duration_s=time.monotonic() - started,
        )


def _apply_edit(cwd: Path, rel_path: str, content: str | None) -> str:
    root = cwd.resolve()
    target = (root / rel_path).resolve()
    if not target.is_relative_to(root):
        return f"refused: {rel_path} is outside the working directory"
    if content is None:
        target.unlink(missing_ok=True)
        return f"deleted {rel_path}"
    target.parent.mkdir(parents=True, exist_ok=True)
    before_ns = target.stat().st_mtime_ns if target.exists() else None
    target.write_text(content)
    if before_ns is not None:
        recording.move_mtime_past(target, before_ns)
    return f"wrote {len(content)} characters to {rel_path}"
