"""The ``opencode`` engine: ``opencode run --format json``, one process per turn.

The argv (shared/agent-clis.md section 4)::

    opencode run --format json --dir=CWD [--model=PROVIDER/MODEL] [--session=ID]
                 [--auto] [EXTRA...]

with the prompt on stdin (``run`` reads its message from piped stdin when no message
argument is given) and the turn's settings in ``OPENCODE_CONFIG_CONTENT`` (JSON
merged over any the caller's environment already carries): the permission table for the
level (``edit``/``bash``/``webfetch``/``external_directory`` set to allow or deny, so
nothing is left to "ask", which ``run`` auto-rejects), ``autoupdate`` and ``share``
off, and the engine's own ``config`` (provider definitions, for example). The system
prompt has no flag (an agent ``prompt`` would replace OpenCode's own), so it is
prepended to the prompt, as for the ``gemini`` engine.

Events: ``step_start`` / ``step_finish`` (one pair per model request; the finish
carries tokens and the USD cost, summed over the turn), ``text`` (finished parts),
``tool_use`` (only once a tool completed or failed), ``error`` (the turn failed). The
run has no final event: exit 0, no ``error``, and a last ``step_finish`` whose reason
is ``stop`` is success, and the answer is the text after the last ``step_start``; a
stream that ends otherwise is a crash or an interruption. A tool call rejected by the
permission table (``state.status == "error"`` with "rejected permission") fails the
turn as ``EnginePermissionDenied``, since the run then stops with exit 0.

OpenCode has no turn limit in ``run``: ``max_turns`` is enforced here by stopping the
agent once its ``max_turns``-th model request ends asking for tools.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from loops import errors
from loops.engines import base, process, stream
from loops.engines import options as options_mod
from loops.usage import Usage

INSTALL_HINT = "npm install -g opencode-ai"
#: the environment variable OpenCode reads inline JSON configuration from
CONFIG_ENV = "OPENCODE_CONFIG_CONTENT"

#: our permission level -> OpenCode's permission table (nothing left to "ask")
PERMISSIONS: dict[base.Permission, dict[str, str]] = {
    base.Permission.READ_ONLY: {
        "edit": "deny",
        "bash": "deny",
        "webfetch": "allow",
        "external_directory": "deny",
    },
    base.Permission.WORKSPACE_WRITE: {
        "edit": "allow",
        "bash": "allow",
        "webfetch": "allow",
        "external_directory": "deny",
    },
    base.Permission.FULL: {
        "edit": "allow",
        "bash": "allow",
        "webfetch": "allow",
        "external_directory": "allow",
    },
}
#: what each level means for OpenCode (the README's permission table)
PERMISSION_NOTES: dict[base.Permission, str] = {
    base.Permission.READ_ONLY: "config `permission`: `edit`, `bash` and `external_directory` "
    "deny (not offered); reading tools and `webfetch` allowed",
    base.Permission.WORKSPACE_WRITE: "`edit` and `bash` allow, `external_directory` deny "
    "(paths outside the project refused); bash is **not** sandboxed",
    base.Permission.FULL: "`edit`, `bash`, `webfetch`, `external_directory` allow, plus `--auto`",
}
#: the sub-agent tool, denied for leaf agents
SUBAGENT_TOOL = "task"

AUTH_HINT = "configure the provider's API key (opencode auth login, or its env variable)"
#: error texts -> our error; first match wins
TEXT_RULES: tuple[stream.Rule, ...] = (
    stream.Rule(
        r"Session not found", errors.EngineSessionNotFound,
        "sessions are per machine (~/.local/share/opencode); start a fresh session",
    ),
    stream.Rule(
        r"\b40[13]\b|Incorrect API key|invalid.api.key|Unauthorized|AuthError|api key",
        errors.EngineAuthError, AUTH_HINT,
    ),
    stream.Rule(
        r"\b429\b|rate.limit|usage limit|quota|Too Many Requests", errors.EngineRateLimited
    ),
    stream.Rule(
        r"Cannot connect to API|Unable to connect|ECONNREFUSED|ENOTFOUND|fetch failed",
        errors.EngineNetworkError, "check the network or the provider's baseURL",
    ),
    stream.Rule(
        r"Model not found|ProviderModelNotFound|ProviderInitError|\b(400|404|5\d\d)\b",
        errors.EngineApiError,
    ),
)  # fmt: skip
_REJECTED = "rejected permission"


@dataclasses.dataclass(frozen=True, slots=True)
class OpenCodeOptions(options_mod.CliOptions):
    """Engine-level settings of the ``opencode`` engine (beyond ``CliOptions``).

    Attributes:
        executable: the command name or path of the CLI.
        extra_args: more arguments, placed before the prompt.
        model: ``provider/model`` when the request names none.
        config: OpenCode configuration merged into ``OPENCODE_CONFIG_CONTENT``
            (provider definitions, ``baseURL``, per-model ``cost``...).
    """

    executable: str = "opencode"
    model: str | None = None
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class OpenCodeEngine(options_mod.OptionsEngine[OpenCodeOptions]):
    """Runs OpenCode turns (see the module docstring)."""

    name = "opencode"
    options_class = OpenCodeOptions
    capabilities = base.Capabilities(
        resume=True, streaming=True, cost_reported=True, subagents=True
    )

    def build_argv(self, request: base.TurnRequest) -> list[str]:
        """The exact argv of one turn (the prompt goes to stdin)."""
        argv = [
            self.options.executable,
            "run",
            "--format",
            "json",
            f"--dir={Path(request.cwd).resolve()}",
        ]
        model = request.model or self.options.model
        if model:
            argv.append(f"--model={model}")
        if request.resume_session_id:
            argv.append(f"--session={request.resume_session_id}")
        if request.permission is base.Permission.FULL:
            argv.append("--auto")
        argv += self.options.extra_args
        return argv

    def prompt_text(self, request: base.TurnRequest) -> str:
        """The prompt, with the system prompt (which has no flag) in front."""
        return stream.prompt_with_system(request)

    def build_config(self, request: base.TurnRequest, inherited: str | None) -> dict[str, Any]:
        """The turn's ``OPENCODE_CONFIG_CONTENT``: inherited, the engine's, then ours."""
        config: dict[str, Any] = {}
        if inherited:
            try:
                loaded = json.loads(inherited)
            except ValueError as exc:
                raise errors.ConfigError(
                    f"{CONFIG_ENV} in the agent's environment is not valid JSON: {exc}"
                ) from exc
            if isinstance(loaded, dict):
                config = loaded
        config = _merge(config, dict(self.options.config))
        permission = dict(PERMISSIONS[request.permission])
        if request.leaf:
            permission[SUBAGENT_TOOL] = "deny"
        config = _merge(config, {"permission": permission})
        config.setdefault("autoupdate", False)
        config.setdefault("share", "disabled")
        return config

    async def run_turn(self, request: base.TurnRequest) -> AsyncIterator[base.TurnEvent]:
        """Run one turn; yield events ending with a ``TurnResult``."""
        env = process.merged_env(self.options.env, request.env)
        try:
            env[CONFIG_ENV] = json.dumps(self.build_config(request, env.get(CONFIG_ENV)))
        except errors.ConfigError as exc:
            yield base.TurnResult(
                status=base.TurnStatus.ERROR, error=errors.EngineCrashed(str(exc))
            )
            return
        spec = stream.turn_spec(
            request,
            self.options,
            argv=self.build_argv(request),
            env=env,
            stdin=self.prompt_text(request).encode(),
            install_hint=INSTALL_HINT,
        )
        parser = OpenCodeStreamParser(
            max_turns=request.max_turns, model=request.model or self.options.model
        )
        async with contextlib.aclosing(
            stream.run_jsonl_turn(spec, parser, agent=self.name)
        ) as events:
            async for event in events:
                yield event


class OpenCodeStreamParser:
    """Parses one turn of ``opencode run --format json`` output."""

    def __init__(self, *, max_turns: int | None = None, model: str | None = None) -> None:
        self.max_turns = max_turns
        self.model = model
        self.session_id: str | None = None
        self.usage = Usage()
        self.steps_finished = 0
        self.tool_steps = 0
        self.last_reason: str | None = None
        self.error_event: dict[str, Any] | None = None
        self.rejected: list[str] = []
        self._texts_since_step: list[str] = []
        self._stop_error: errors.EngineError | None = None

    @property
    def stop_error(self) -> errors.EngineError | None:
        """Set once the turn limit is reached."""
        return self._stop_error

    def feed(self, event: dict[str, Any]) -> list[base.TurnEvent]:
        """Digest one JSON event."""
        if isinstance(event.get("sessionID"), str):
            self.session_id = event["sessionID"]
        kind = event.get("type")
        part = event.get("part")
        part = part if isinstance(part, dict) else {}
        if kind == "step_start":
            self._texts_since_step = []
        elif kind == "text" and isinstance(part.get("text"), str):
            self._texts_since_step.append(part["text"])
            return [base.AgentText(part["text"])]
        elif kind == "tool_use":
            return self._on_tool(part)
        elif kind == "step_finish":
            return self._on_step_finish(part)
        elif kind == "error":
            self.error_event = event
        return []

    def _on_tool(self, part: dict[str, Any]) -> list[base.TurnEvent]:
        state = part.get("state")
        state = state if isinstance(state, dict) else {}
        call_id = str(part.get("callID") or part.get("id") or "")
        tool_input = state.get("input")
        failed = state.get("status") == "error"
        output = str(state.get("error") if failed else state.get("output") or "")
        if failed and _REJECTED in output:
            self.rejected.append(str(part.get("tool", "?")))
        return [
            base.ToolUse(
                id=call_id,
                name=str(part.get("tool", "")),
                input=tool_input if isinstance(tool_input, dict) else {},
            ),
            base.ToolResult(id=call_id, output=output, is_error=failed),
        ]

    def _on_step_finish(self, part: dict[str, Any]) -> list[base.TurnEvent]:
        self.steps_finished += 1
        self.last_reason = str(part.get("reason") or "")
        self.usage = self.usage + _step_usage(part)
        if self.last_reason == "tool-calls":
            self.tool_steps += 1
            if self.max_turns is not None and self.tool_steps >= self.max_turns:
                self._stop_error = errors.EngineMaxTurns(
                    f"opencode reached the turn limit ({self.max_turns}): model request "
                    f"{self.steps_finished} asked for more tool calls"
                )
        return [base.UsageReport(self.usage)]

    async def finish(self, exit: process.ProcessExit) -> base.TurnResult:
        """Decide the outcome: an ``error`` event, the exit status, rejections."""
        final_text = "".join(self._texts_since_step).strip()
        known: dict[str, Any] = {
            "session_id": self.session_id,
            "final_text": final_text,
            "usage": self.usage,
            "cost_source": "reported" if self.usage.cost_usd is not None else None,
            "model": self.model,
        }
        error: errors.EngineError | None = self._stop_error
        if error is None and self.error_event is not None:
            error = _event_error(self.error_event)
        if error is None and self.rejected and exit.returncode == 0:
            error = errors.EnginePermissionDenied(
                f"opencode was denied {len(self.rejected)} tool call(s) "
                f"({', '.join(sorted(set(self.rejected)))}) and stopped; "
                "raise the permission level"
            )
        # No final event exists: a clean end is exit 0 after a step that stopped.
        if error is None and (exit.returncode != 0 or self.last_reason != "stop"):
            return stream.unfinished_result(
                exit, agent="opencode", stderr_rules=TEXT_RULES, **known
            )
        return stream.exit_result(exit, error=error, num_turns=self.steps_finished, **known)


def _event_error(event: dict[str, Any]) -> errors.EngineError:
    raw = event.get("error")
    error = raw if isinstance(raw, dict) else {}
    data = error.get("data")
    data = data if isinstance(data, dict) else {}
    name = str(error.get("name") or "Error")
    message = str(data.get("message") or error.get("message") or name)
    status = data.get("statusCode")
    text = f"{name}: {message}" + (f" (HTTP {status})" if isinstance(status, int) else "")
    found = stream.classify(TEXT_RULES, text, prefix="opencode")
    if isinstance(found, errors.EngineRateLimited) and found.retry_after_s is None:
        headers = data.get("responseHeaders")
        retry = headers.get("retry-after") if isinstance(headers, dict) else None
        seconds = _float(retry)
        if seconds is not None:
            found = errors.EngineRateLimited(found.message, retry_after_s=seconds)
    return found or errors.EngineApiError(f"opencode: {stream.one_line(text)}")


def _step_usage(part: dict[str, Any]) -> Usage:
    tokens = part.get("tokens")
    tokens = tokens if isinstance(tokens, dict) else {}
    cache = tokens.get("cache")
    cache = cache if isinstance(cache, dict) else {}
    read = stream.int_or_zero(cache.get("read"))
    cost = part.get("cost")
    return Usage(
        input_tokens=stream.int_or_zero(tokens.get("input"))
        + read
        + stream.int_or_zero(cache.get("write")),
        output_tokens=stream.int_or_zero(tokens.get("output"))
        + stream.int_or_zero(tokens.get("reasoning")),
        cached_input_tokens=read,
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
    )


def _merge(base_config: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overlay`` into a copy of ``base_config`` (tables merge, values replace)."""
    merged = dict(base_config)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = dict(value) if isinstance(value, Mapping) else value
    return merged


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
