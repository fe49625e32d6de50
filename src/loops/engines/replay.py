"""The ``replay`` engine: play a recording (:mod:`loops.engines.recording`) back turn by turn.

Each ``run_turn`` takes the next recorded turn, yields its events as they were
recorded, puts the files the turn changed back into the cwd (so gates see what the
agent left), and ends with the recorded result. No model is called, so a loop can be
re-run offline and deterministically after its gates or checks changed, and tests
can run on real recorded sessions.

Matching (``match``):

- ``"prompt"`` (default): the first remaining turn whose prompt is exactly the
  request's (the working directory's path excepted, so a replay may run elsewhere, and
  measured durations such as ``0.04s``, which a check's output fed back carries),
  wherever it is in the recording (parallel agents may have run in any order). Judge
  turns are matched the same way.
- ``"order"``: the next turn in order, whatever the prompt.

A replay that diverges stops the run with :class:`~loops.errors.ReplayDiverged`:
the run asked for more turns than were recorded, or (``match="prompt"``) for a prompt
the recording does not have; the message shows the difference.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from loops import errors
from loops.engines import base, recording

Match = Literal["prompt", "order"]


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedTurn:
    """One turn of a recording.

    Attributes:
        index: its number in the recording.
        request: the request record (``type: "request"``).
        events: the recorded events, the result last.
        files: the recorded file changes (``{"written": {...}, "deleted": [...]}``).
    """

    index: int
    request: dict[str, Any]
    events: tuple[base.TurnEvent, ...]
    files: dict[str, Any]

    @property
    def prompt(self) -> str:
        """The prompt the turn was asked."""
        return str(self.request.get("prompt", ""))


def load_recording(directory: Path) -> list[RecordedTurn]:
    """Every turn recorded in ``directory``, in order.

    Raises:
        ConfigError: the directory is missing, holds no turns, or a file is damaged.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise errors.ConfigError(f"replay: {directory} is not a directory (record with --record)")
    found = sorted(
        (int(m.group(1)), p)
        for p in directory.iterdir()
        if (m := recording.TURN_FILE.fullmatch(p.name))
    )
    if not found:
        raise errors.ConfigError(
            f"replay: {directory} holds no recorded turns (turn-0001.jsonl...)"
        )
    turns: list[RecordedTurn] = []
    for index, path in found:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        try:
            records = [json.loads(line) for line in lines]
            request = records[0]
            if request.get("type") != "request":
                raise ValueError("the first line is not the request")
            events = tuple(base.event_from_dict(r) for r in records[1:])
        except (ValueError, IndexError, errors.InputError) as exc:
            raise errors.ConfigError(f"replay: {path} is damaged: {exc}") from exc
        files_path = path.with_name(f"turn-{index:04d}.files.json")
        files = json.loads(files_path.read_text()) if files_path.is_file() else {}
        turns.append(RecordedTurn(index, request, events, files))
    return turns


class ReplayEngine:
    """Plays a recording back (see the module docstring).

    Args:
        directory: the recording.
        match: how a request picks its turn.
        apply_files: put the recorded file changes into the cwd.
        delay_s: pause between events (``0``: as fast as possible).
    """

    capabilities = base.Capabilities(resume=True, streaming=True, cost_reported=True)

    def __init__(
        self,
        directory: Path,
        *,
        match: Match = "prompt",
        apply_files: bool = True,
        delay_s: float = 0.0,
    ) -> None:
        if match not in ("prompt", "order"):
            raise errors.ConfigError(f"replay match={match!r} is invalid; use 'prompt' or 'order'")
        self.directory = Path(directory)
        self.turns = load_recording(self.directory)
        self.remaining = list(self.turns)
        self.match = match
        self.apply_files = apply_files
        self.delay_s = delay_s
        self.name = str(self.turns[0].request.get("engine") or "replay")

    @classmethod
    def from_options(
        cls,
        *,
        dir: str | Path | None = None,
        directory: str | Path | None = None,
        match: Match = "prompt",
        apply_files: bool = True,
        delay_s: float = 0.0,
    ) -> ReplayEngine:
        """Build from plain options: ``dir`` (or ``directory``) names the recording."""
        where = dir if dir is not None else directory
        if where is None:
            raise errors.ConfigError("the replay engine needs dir=RECORDING_DIR (see --record)")
        return cls(Path(where), match=match, apply_files=apply_files, delay_s=delay_s)

    def _take(self, request: base.TurnRequest) -> RecordedTurn:
        played = len(self.turns) - len(self.remaining)
        if not self.remaining:
            raise errors.ReplayDiverged(
                f"replay diverged: the run asked for turn {played + 1} but {self.directory} "
                f"recorded only {len(self.turns)} (prompt asked: {_head(request.prompt)})"
            )
        if self.match == "order":
            return self.remaining.pop(0)
        for position, turn in enumerate(self.remaining):
            if _portable(turn.prompt, turn.request.get("cwd")) == _portable(
                request.prompt, str(request.cwd)
            ):
                return self.remaining.pop(position)
        expected = _portable(self.remaining[0].prompt, self.remaining[0].request.get("cwd"))
        asked = _portable(request.prompt, str(request.cwd))
        raise errors.ReplayDiverged(
            f"replay diverged at turn {played + 1}: no recorded turn in {self.directory} has "
            f"this prompt; the next recorded one differs: {_diff(expected, asked)} "
            "(replay with match='order' to ignore prompts)"
        )

    async def run_turn(self, request: base.TurnRequest) -> AsyncIterator[base.TurnEvent]:
        """Yield the recorded events of the turn matching ``request``.

        Raises:
            ReplayDiverged: the recording has no such turn.
        """
        turn = self._take(request)
        result: base.TurnResult | None = None
        for event in turn.events:
            if isinstance(event, base.TurnResult):
                result = event
                continue
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield event
        if self.apply_files and turn.files:
            await asyncio.to_thread(recording.apply_changes, Path(request.cwd), turn.files)
        if result is None:
            result = base.TurnResult(
                status=base.TurnStatus.ERROR,
                error=errors.EngineCrashed(
                    f"replay: turn {turn.index} was recorded without its result (cut short)"
                ),
            )
        yield result


#: a measured duration, as test runners print them ("in 0.04s", "0.003s", "1.20 s", "12.5ms")
_TIMING = re.compile(r"(?<![\w.])\d+\.\d+ ?m?s\b")


def _portable(prompt: str, cwd: object) -> str:
    """The prompt as a replay compares it: its working directory written as ``{cwd}``
    (replays may move) and measured durations as ``{t}`` (a check's output fed back to
    the agent says how long the tests took, which differs on every run)."""
    prompt = _TIMING.sub("{t}", prompt)
    if not isinstance(cwd, str) or not cwd:
        return prompt
    for form in sorted({cwd, str(Path(cwd).resolve())}, key=len, reverse=True):
        prompt = prompt.replace(form, "{cwd}")
    return prompt


def _head(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def _diff(expected: str, actual: str) -> str:
    """Where two prompts first differ, as ``recorded '...', asked '...'``."""
    common = 0
    for a, b in zip(expected, actual, strict=False):
        if a != b:
            break
        common += 1
    start = max(0, common - 20)

    def around(text: str) -> str:
        piece = text[start : common + 40]
        return repr(("…" if start else "") + piece + ("…" if len(text) > common + 40 else ""))

    return f"recorded {around(expected)}, asked {around(actual)} (at character {common})"
