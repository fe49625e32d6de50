"""The ``codex`` engine: ``codex exec --json``, one process per turn.

The argv (options always before ``resume``, the prompt on stdin via ``-``)::

    codex exec --json --skip-git-repo-check -C CWD --sandbox MODE
               -c approval_policy="never" [--model=MODEL]
               [-c developer_instructions="SYSTEM"] [--disable multi_agent]
               [-c KEY=VALUE ...] [resume THREAD_ID] -

Events are the ``ThreadEvent`` lines of shared/agent-clis.md section 2.3:
``thread.started`` gives the session (thread) id, ``item.*`` carry messages and tool
calls, and ``turn.completed`` / ``turn.failed`` end the turn. Codex retries failed
requests itself and reports each retry as a top-level ``error`` event starting
``Reconnecting...``; the engine stops it at once when the reason is an HTTP 401/403
or 429 or when codex says it is "waiting for network" (from then on it would wait
forever), and after ``network_retries`` other reconnects.

Codex has no turn limit in exec: ``max_turns`` is enforced here by stopping the
agent when it starts its ``max_turns``-th tool call (like Claude Code, which stops
when the model asks for a tool after its last allowed model request).

**Usage is thread-cumulative.** ``turn.completed.usage`` counts the whole thread, so
this turn's usage is the difference from the thread's previous total. The baseline is
``TurnRequest.session_usage`` when the caller checkpointed it, else the total this
engine saw last for the thread, else (resuming a thread this process never ran) the
last ``token_count`` recorded in the thread's rollout file under ``$CODEX_HOME``.
Codex reports no cost; it is computed from the genai-prices table for the model
(the request's, the engine's default, or the one the rollout recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from loops import errors
from loops.engines import base, pricing, process, stream
from loops.engines import options as options_mod
from loops.usage import Usage

log = logging.getLogger(__name__)

INSTALL_HINT = "npm install -g @openai/codex"

#: our permission level -> codex --sandbox mode (approvals are always "never")
SANDBOX_MODES: dict[base.Permission, str] = {
    base.Permission.READ_ONLY: "read-only",
    base.Permission.WORKSPACE_WRITE: "workspace-write",
    base.Permission.FULL: "danger-full-access",
}
#: what each level means for Codex (the README's permission table)
PERMISSION_NOTES: dict[base.Permission, str] = {
    base.Permission.READ_ONLY: "`--sandbox read-only` (OS sandbox: writes fail)",
    base.Permission.WORKSPACE_WRITE: "`--sandbox workspace-write` (OS sandbox: writes inside "
    "the cwd only)",
    base.Permission.FULL: "`--sandbox danger-full-access`; approvals never asked",
}
#: the feature that offers sub-agent tools, disabled for leaf agents
SUBAGENT_FEATURE = "multi_agent"
#: thread items that are tool calls, and the tool name we report for each
TOOL_ITEMS: dict[str, str] = {
    "command_execution": "shell",
    "file_change": "apply_patch",
    "mcp_tool_call": "mcp",
    "web_search": "web_search",
}
_RECONNECTING = re.compile(r"^Reconnecting\.\.\.\s*(?:\d+/\d+)?\s*(?:\((?P<reason>.*)\))?", re.S)

AUTH_HINT = "run `codex login` or set CODEX_API_KEY / OPENAI_API_KEY"
#: a failure or retry reason -> our error; first match wins
TEXT_RULES: tuple[stream.Rule, ...] = (
    stream.Rule(
        r"no rollout found for thread id",
        errors.EngineSessionNotFound,
        "sessions are per machine ($CODEX_HOME); start a fresh session",
    ),
    stream.Rule(
        r"\b40[13]\b|Unauthorized|Forbidden|invalid.api.key|Missing environment variable"
        r"|not logged in|login",
        errors.EngineAuthError,
        AUTH_HINT,
    ),
    stream.Rule(
        r"\b429\b|Too Many Requests|rate.limit|usage limit|quota", errors.EngineRateLimited
    ),
    stream.Rule(
        r"waiting for network|Connection (failed|refused)|error sending request"
        r"|failed to lookup address|stream disconnected|timed out",
        errors.EngineNetworkError,
        "check the network or the provider's base_url",
    ),
    stream.Rule(
        r"unexpected status \d+|model.*not (found|supported)|invalid_request", errors.EngineApiError
    ),
    stream.Rule(
        r"unexpected argument|unrecognized|invalid value|Usage: codex",
        errors.EngineCrashed,
        "the codex CLI rejected its arguments; check the installed version",
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class CodexOptions(options_mod.CliOptions):
    """Engine-level settings of the ``codex`` engine (beyond ``CliOptions``).

    Attributes:
        executable: the command name or path of the CLI.
        extra_args: more arguments, placed after the fixed ones.
        model: the model when the request names none (also used for pricing).
        config: ``-c key=value`` overrides; values are TOML (``'"text"'`` for strings).
        network_retries: stop after this many reconnects that are not 401/429.
        provider_id: genai-prices provider used to price the model.
        price_overrides: model -> price for models genai-prices does not know.
    """

    executable: str = "codex"
    model: str | None = None
    config: Mapping[str, str] = dataclasses.field(default_factory=dict)
    network_retries: int = 3
    provider_id: str | None = "openai"
    price_overrides: Mapping[str, pricing.ModelPrice] = dataclasses.field(default_factory=dict)


class CodexEngine(options_mod.OptionsEngine[CodexOptions]):
    """Runs Codex turns (see the module docstring)."""

    name = "codex"
    options_class = CodexOptions
    capabilities = base.Capabilities(
        resume=True, streaming=True, cost_computed=True, subagents=True
    )

    def __init__(self, options: CodexOptions | None = None) -> None:
        super().__init__(options)
        #: thread id -> the last cumulative usage seen for it (the next turn's baseline)
        self.thread_totals: dict[str, Usage] = {}

    def model_for(self, request: base.TurnRequest) -> str | None:
        """The model named for this turn, if any."""
        return request.model or self.options.model

    def build_argv(self, request: base.TurnRequest) -> list[str]:
        """The exact argv of one turn (the prompt goes to stdin)."""
        argv = [
            self.options.executable,
            "exec",
            "--json",
            "--skip-git-repo-check",
            "-C",
            # Absolute: codex resolves -C against its own cwd, which is already this one.
            str(Path(request.cwd).resolve()),
            "--sandbox",
            SANDBOX_MODES[request.permission],
            "-c",
            'approval_policy="never"',
        ]
        model = self.model_for(request)
        if model:
            argv.append(f"--model={model}")  # "=": a value starting with "-" stays a value
        if request.system:
            argv += ["-c", f"developer_instructions={toml_string(request.system)}"]
        if request.leaf:
            argv += ["--disable", SUBAGENT_FEATURE]
        for key, value in self.options.config.items():
            argv += ["-c", f"{key}={value}"]
        argv += self.options.extra_args
        if request.resume_session_id:
            argv += ["resume", request.resume_session_id]
        argv.append("-")
        return argv

    async def run_turn(self, request: base.TurnRequest) -> AsyncIterator[base.TurnEvent]:
        """Run one turn; yield events ending with a ``TurnResult``."""
        env = process.merged_env(self.options.env, request.env)
        baseline = await self._baseline(request, env)
        spec = stream.turn_spec(
            request,
            self.options,
            argv=self.build_argv(request),
            env=env,
            stdin=request.prompt.encode(),
            install_hint=INSTALL_HINT,
        )
        parser = CodexStreamParser(
            network_retries=self.options.network_retries,
            max_turns=request.max_turns,
            baseline=baseline,
            model=self.model_for(request),
            resolve_model=lambda thread_id: _rollout_model(codex_home(env), thread_id),
            price=pricing.pricer(
                provider_id=self.options.provider_id, overrides=self.options.price_overrides
            ),
        )
        # aclosing: closing this generator must stop the agent now, not at GC time.
        async with contextlib.aclosing(
            stream.run_jsonl_turn(spec, parser, agent=self.name)
        ) as events:
            async for event in events:
                if isinstance(event, base.TurnResult) and event.session_id and event.session_usage:
                    self.thread_totals[event.session_id] = event.session_usage
                yield event

    async def _baseline(self, request: base.TurnRequest, env: Mapping[str, str]) -> Usage:
        if request.session_usage is not None:
            return request.session_usage
        thread_id = request.resume_session_id
        if thread_id is None:
            return Usage()
        if thread_id in self.thread_totals:
            return self.thread_totals[thread_id]
        found = await asyncio.to_thread(_rollout_totals, codex_home(env), thread_id)
        return found or Usage()


class CodexStreamParser:
    """Parses one turn of ``codex exec --json`` output."""

    def __init__(
        self,
        *,
        network_retries: int = 3,
        max_turns: int | None = None,
        baseline: Usage | None = None,
        model: str | None = None,
        resolve_model: Callable[[str], str | None] | None = None,
        price: pricing.PriceFn | None = None,
    ) -> None:
        self.network_retries = network_retries
        self.max_turns = max_turns
        self.baseline = baseline or Usage()
        self.model = model
        self._resolve_model = resolve_model
        self._price = price
        self.thread_id: str | None = None
        self.final_text = ""
        self.totals: Usage | None = None
        self.failure: str | None = None
        self.completed = False
        self.warnings: list[str] = []
        self.cost_source: str | None = None
        self._reconnects = 0
        self._tools_started: set[str] = set()
        self._stop_error: errors.EngineError | None = None

    @property
    def stop_error(self) -> errors.EngineError | None:
        """Set on a fatal retry reason, too many reconnects, or the turn limit."""
        return self._stop_error

    def feed(self, event: dict[str, Any]) -> list[base.TurnEvent]:
        """Digest one ThreadEvent."""
        kind = event.get("type")
        if kind == "thread.started" and isinstance(event.get("thread_id"), str):
            self.thread_id = event["thread_id"]
            return [base.SessionStarted(self.thread_id)]
        if kind in ("item.started", "item.updated", "item.completed"):
            item = event.get("item")
            if isinstance(item, dict):
                return self._on_item(item, completed=kind == "item.completed")
        elif kind == "turn.completed":
            self.completed = True
            usage = _usage(event.get("usage"))
            if usage is not None:
                self.totals = usage
                return [base.UsageReport(_minus(usage, self.baseline))]
        elif kind == "turn.failed":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            self.failure = str(message or "turn failed")
        elif kind == "error":
            self._on_error(str(event.get("message") or ""))
        return []

    def _on_error(self, message: str) -> None:
        match = _RECONNECTING.match(message)
        if match is None:
            self.warnings.append(message)
            return
        reason = match.group("reason") or message
        error = stream.classify(TEXT_RULES, reason, prefix="codex")
        if isinstance(error, errors.EngineAuthError | errors.EngineRateLimited):
            self._stop_error = error
            return
        self._reconnects += 1
        # "waiting for network" comes once codex's own quick retries are spent: from
        # then on it waits forever, so it is decisive on its own.
        if self._reconnects >= self.network_retries or "waiting for network" in message:
            self._stop_error = errors.EngineNetworkError(
                f"codex cannot reach the model API after {self._reconnects} reconnects: "
                f"{stream.one_line(reason)} (check the network or the provider's base_url)"
            )

    def _on_item(self, item: dict[str, Any], *, completed: bool) -> list[base.TurnEvent]:
        item_type = str(item.get("type", ""))
        item_id = str(item.get("id", ""))
        if item_type == "agent_message":
            if completed and isinstance(item.get("text"), str):
                self.final_text = item["text"]
                return [base.AgentText(item["text"])]
            return []
        if item_type == "error":
            if completed:
                self.warnings.append(str(item.get("message", "")))
            return []
        if item_type not in TOOL_ITEMS:
            return []  # reasoning, todo_list: not part of the visible transcript
        out: list[base.TurnEvent] = []
        if item_id not in self._tools_started:
            self._tools_started.add(item_id)
            out.append(base.ToolUse(id=item_id, name=_tool_name(item), input=_tool_input(item)))
            if self.max_turns is not None and len(self._tools_started) >= self.max_turns:
                self._stop_error = errors.EngineMaxTurns(
                    f"codex reached the turn limit ({self.max_turns}): it started tool call "
                    f"number {len(self._tools_started)}"
                )
        if completed:
            out.append(
                base.ToolResult(id=item_id, output=_tool_output(item), is_error=_failed(item))
            )
        return out

    async def finish(self, exit: process.ProcessExit) -> base.TurnResult:
        """Decide the outcome: ``turn.completed`` is success, anything else is not."""
        usage, session_usage = await self._usage()
        known: dict[str, Any] = {
            "session_id": self.thread_id,
            "final_text": self.final_text,
            "usage": usage,
            "cost_source": self.cost_source if usage.cost_usd is not None else None,
            "session_usage": session_usage,
            "model": self.model,
        }
        if self._stop_error is None and not self.completed and self.failure is None:
            return stream.unfinished_result(exit, agent="codex", stderr_rules=TEXT_RULES, **known)
        error = self._stop_error
        if error is None and not self.completed:
            failure = self.failure or "turn failed"
            error = stream.classify(TEXT_RULES, failure, prefix="codex")
            error = error or errors.EngineApiError(f"codex: {stream.one_line(failure)}")
        return stream.exit_result(exit, error=error, **known)

    async def _usage(self) -> tuple[Usage, Usage | None]:
        if self.totals is None:
            return Usage(), None
        turn = _minus(self.totals, self.baseline)
        if self.model is None and self._resolve_model is not None and self.thread_id:
            self.model = await asyncio.to_thread(self._resolve_model, self.thread_id)
        turn, self.cost_source = await pricing.priced(turn, self.model, self._price)
        return turn, self.totals


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (JSON escapes are valid TOML escapes)."""
    return json.dumps(text, ensure_ascii=True)


def codex_home(env: Mapping[str, str]) -> Path | None:
    """Where codex keeps its sessions for this environment."""
    if env.get("CODEX_HOME"):
        return Path(env["CODEX_HOME"])
    if env.get("HOME"):
        return Path(env["HOME"]) / ".codex"
    return None


def _rollout_path(home: Path | None, thread_id: str) -> Path | None:
    if home is None or not re.fullmatch(r"[0-9A-Za-z-]+", thread_id):
        return None
    found = sorted((home / "sessions").glob(f"*/*/*/rollout-*-{thread_id}.jsonl"))
    return found[-1] if found else None


def _rollout_events(home: Path | None, thread_id: str) -> list[dict[str, Any]]:
    path = _rollout_path(home, thread_id)
    if path is None:
        return []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [e for e in map(process.parse_json_line, lines) if e is not None]


def _rollout_totals(home: Path | None, thread_id: str) -> Usage | None:
    """The thread's last cumulative token count recorded in its rollout file."""
    totals = None
    for event in _rollout_events(home, thread_id):
        payload = event.get("payload")
        if isinstance(payload, dict) and payload.get("type") == "token_count":
            info = payload.get("info")
            if isinstance(info, dict):
                totals = _usage(info.get("total_token_usage")) or totals
    return totals


def _rollout_model(home: Path | None, thread_id: str) -> str | None:
    """The model the thread ran with, as its rollout file recorded it."""
    model = None
    for event in _rollout_events(home, thread_id):
        payload = event.get("payload")
        if not isinstance(payload, dict):
            continue
        settings = payload.get("thread_settings")
        if isinstance(settings, dict) and isinstance(settings.get("model"), str):
            model = settings["model"]
        elif event.get("type") == "turn_context" and isinstance(payload.get("model"), str):
            model = payload["model"]
    return model


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    return Usage(
        input_tokens=stream.int_or_zero(data.get("input_tokens")),
        output_tokens=stream.int_or_zero(data.get("output_tokens")),
        cached_input_tokens=stream.int_or_zero(data.get("cached_input_tokens")),
    )


def _minus(total: Usage, baseline: Usage) -> Usage:
    """This turn's share of a cumulative total (never negative: a reset thread restarts)."""
    if total.input_tokens < baseline.input_tokens or total.output_tokens < baseline.output_tokens:
        return dataclasses.replace(total, cost_usd=None)
    return Usage(
        input_tokens=total.input_tokens - baseline.input_tokens,
        output_tokens=total.output_tokens - baseline.output_tokens,
        cached_input_tokens=max(0, total.cached_input_tokens - baseline.cached_input_tokens),
    )


def _tool_name(item: dict[str, Any]) -> str:
    if item.get("type") == "mcp_tool_call":
        return f"{item.get('server', 'mcp')}.{item.get('tool', '?')}"
    return TOOL_ITEMS[str(item.get("type"))]


def _tool_input(item: dict[str, Any]) -> dict[str, Any]:
    kind = item.get("type")
    if kind == "command_execution":
        return {"command": item.get("command", "")}
    if kind == "file_change":
        return {"changes": item.get("changes", [])}
    if kind == "mcp_tool_call":
        arguments = item.get("arguments")
        return arguments if isinstance(arguments, dict) else {"arguments": arguments}
    return {"query": item.get("query", "")}


def _tool_output(item: dict[str, Any]) -> str:
    kind = item.get("type")
    if kind == "command_execution":
        return str(item.get("aggregated_output") or "")
    if kind == "file_change":
        changes = item.get("changes")
        if isinstance(changes, list):
            return "\n".join(
                f"{c.get('kind', '?')} {c.get('path', '?')}" for c in changes if isinstance(c, dict)
            )
        return ""
    if kind == "mcp_tool_call":
        error = item.get("error")
        if isinstance(error, dict):
            return str(error.get("message", ""))
        return json.dumps(item.get("result"), default=str)
    return ""


def _failed(item: dict[str, Any]) -> bool:
    if item.get("status") == "failed":
        return True
    exit_code = item.get("exit_code")
    return isinstance(exit_code, int) and exit_code != 0
