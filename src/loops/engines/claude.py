"""The ``claude`` engine: Claude Code in print mode with streaming JSON output.

One turn is one process::

    claude -p --output-format stream-json --verbose --permission-mode MODE
           [--model=M] [--append-system-prompt=S] [--max-turns=N]
           [--allowedTools T...] [--disallowedTools T...] [--resume=SESSION]

with the prompt on stdin and ``cwd`` the request's cwd (sessions are stored per cwd,
so a resume must run in the same directory). The stream is parsed as described in
shared/agent-clis.md section 1: ``assistant`` lines carry one content block each,
``user`` lines carry tool results, and the final ``result`` line decides the outcome
(``is_error`` is checked, since API failures arrive with ``subtype: "success"``).

Early stops: Claude Code retries failed API calls itself (10 times by default, about
three minutes for an unreachable API). Its ``system/api_retry`` lines tell why, so
the engine stops the agent at once on an authentication failure or a rate limit
(the caller's policy decides about waiting) and after ``network_retries`` retry
signals with no HTTP status (no network).

Usage and cost come from the ``result`` line: ``modelUsage`` summed over models
(``model_usage_since_last_result`` when the CLI provides it), and Claude Code's own
``total_cost_usd``. Claude 2.1.197 reports a resumed invocation's own usage only, so
no baseline is subtracted.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from loops import errors
from loops.engines import base, process, stream
from loops.engines import options as options_mod
from loops.usage import Usage

INSTALL_HINT = "npm install -g @anthropic-ai/claude-code"

#: our permission level -> Claude Code's --permission-mode
PERMISSION_MODES: dict[base.Permission, str] = {
    base.Permission.READ_ONLY: "default",
    base.Permission.WORKSPACE_WRITE: "acceptEdits",
    base.Permission.FULL: "bypassPermissions",
}
#: what each level means for Claude Code (the README's permission table)
PERMISSION_NOTES: dict[base.Permission, str] = {
    base.Permission.READ_ONLY: "`--permission-mode default`; `Edit`/`Write`/`NotebookEdit` "
    "withheld; anything needing approval is denied (print mode cannot ask)",
    base.Permission.WORKSPACE_WRITE: "`--permission-mode acceptEdits` plus `--allowedTools "
    "Bash` (or the request's `tools`); edits stay in the cwd, Bash is **not** sandboxed",
    base.Permission.FULL: "`--permission-mode bypassPermissions` (as root the engine sets "
    "`IS_SANDBOX=1`)",
}
#: tools withheld at the read-only level (in print mode they would be denied anyway)
READ_ONLY_DISALLOWED = ("Edit", "Write", "NotebookEdit")
#: tools auto-approved at the workspace-write level when the request names none
WORKSPACE_DEFAULT_TOOLS = ("Bash",)
#: the sub-agent tool, withheld for leaf agents
SUBAGENT_TOOL = "Task"

#: the `error` field of an assistant line / result status -> our error
API_ERRORS: dict[str, type[errors.EngineError]] = {
    "authentication_failed": errors.EngineAuthError,
    "oauth_org_not_allowed": errors.EngineAuthError,
    "account_on_hold": errors.EngineAuthError,
    "verification_required": errors.EngineAuthError,
    "cloud_credential_error": errors.EngineAuthError,
    "billing_error": errors.EngineAuthError,
    "rate_limit": errors.EngineRateLimited,
    "overloaded": errors.EngineRateLimited,
    "server_error": errors.EngineApiError,
    "invalid_request": errors.EngineApiError,
    "model_not_found": errors.EngineApiError,
    "max_output_tokens": errors.EngineApiError,
    "unknown": errors.EngineApiError,
}
#: HTTP status reported with an API failure -> our error (wins over API_ERRORS)
STATUS_ERRORS: dict[int, type[errors.EngineError]] = {
    401: errors.EngineAuthError,
    403: errors.EngineAuthError,
    429: errors.EngineRateLimited,
    529: errors.EngineRateLimited,
}
#: what to do about each error class, appended to the message
HINTS: dict[type[errors.EngineError], str] = {
    errors.EngineAuthError: "log in with `claude` then /login, or set ANTHROPIC_API_KEY",
    errors.EngineRateLimited: "wait and retry",
    errors.EngineNetworkError: "check the network or ANTHROPIC_BASE_URL",
}
#: result subtypes other than success -> our error
SUBTYPE_ERRORS: dict[str, type[errors.EngineError]] = {
    "error_max_turns": errors.EngineMaxTurns,
    "error_max_budget_usd": errors.EngineMaxTurns,
    "error_max_structured_output_retries": errors.EngineApiError,
    "error_during_execution": errors.EngineCrashed,
}
#: stderr or `errors` text -> our error (usage and startup failures)
TEXT_RULES: tuple[stream.Rule, ...] = (
    stream.Rule(
        r"No conversation found with session ID",
        errors.EngineSessionNotFound,
        "sessions are per machine and per cwd; start a fresh session",
    ),
    stream.Rule(
        r"cannot be used with root/sudo privileges",
        errors.EnginePermissionDenied,
        "run as a non-root user or set IS_SANDBOX=1",
    ),
    stream.Rule(
        r"Not logged in|Invalid API key|/login",
        errors.EngineAuthError,
        HINTS[errors.EngineAuthError],
    ),
    stream.Rule(r"rate limit|usage limit|\b429\b", errors.EngineRateLimited),
    stream.Rule(
        r"Unable to connect|ECONNREFUSED|ENOTFOUND|FailedToOpenSocket",
        errors.EngineNetworkError,
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class ClaudeOptions(options_mod.CliOptions):
    """Engine-level settings of the ``claude`` engine (beyond ``CliOptions``).

    Attributes:
        executable: the command name or path of the CLI.
        extra_args: more arguments, placed before the per-turn ones.
        network_retries: stop after this many retry signals with no HTTP status.
    """

    executable: str = "claude"
    network_retries: int = 3


class ClaudeEngine(options_mod.OptionsEngine[ClaudeOptions]):
    """Runs Claude Code turns (see the module docstring)."""

    name = "claude"
    options_class = ClaudeOptions
    capabilities = base.Capabilities(
        resume=True, streaming=True, cost_reported=True, subagents=True
    )

    def build_argv(self, request: base.TurnRequest) -> list[str]:
        """The exact argv of one turn (the prompt goes to stdin)."""
        argv = [
            self.options.executable,
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            *self.options.extra_args,
            "--permission-mode",
            PERMISSION_MODES[request.permission],
        ]
        # --flag=value: a value starting with "-" must not be read as an option.
        if request.model:
            argv.append(f"--model={request.model}")
        if request.system:
            argv.append(f"--append-system-prompt={request.system}")
        if request.max_turns is not None:
            argv.append(f"--max-turns={request.max_turns}")
        allowed = request.tools
        if allowed is None and request.permission is base.Permission.WORKSPACE_WRITE:
            allowed = WORKSPACE_DEFAULT_TOOLS
        if allowed:
            argv += ["--allowedTools", *allowed]
        disallowed: list[str] = []
        if request.permission is base.Permission.READ_ONLY:
            disallowed += READ_ONLY_DISALLOWED
        if request.leaf:
            disallowed.append(SUBAGENT_TOOL)
        if disallowed:
            argv += ["--disallowedTools", *disallowed]
        if request.resume_session_id:
            argv.append(f"--resume={request.resume_session_id}")
        return argv

    def build_env(self, request: base.TurnRequest) -> dict[str, str]:
        """The agent's environment: base, then the request's, then bypass-mode needs."""
        env = process.merged_env(self.options.env, request.env)
        if request.permission is base.Permission.FULL and os.geteuid() == 0:
            # Claude Code refuses bypass mode as root unless told it runs in a sandbox.
            env.setdefault("IS_SANDBOX", "1")
        return env

    def run_turn(self, request: base.TurnRequest) -> AsyncIterator[base.TurnEvent]:
        """Run one turn; yield events ending with a ``TurnResult``."""
        spec = stream.turn_spec(
            request,
            self.options,
            argv=self.build_argv(request),
            env=self.build_env(request),
            stdin=request.prompt.encode(),
            install_hint=INSTALL_HINT,
        )
        parser = ClaudeStreamParser(network_retries=self.options.network_retries)
        return stream.run_jsonl_turn(spec, parser, agent=self.name)


class ClaudeStreamParser:
    """Parses one turn of Claude Code's stream-json output."""

    def __init__(self, *, network_retries: int = 3) -> None:
        self.network_retries = network_retries
        self.session_id: str | None = None
        self.model: str | None = None
        self.result: dict[str, Any] | None = None
        self.last_api_error: str | None = None
        self._network_signals = 0
        self._stop_error: errors.EngineError | None = None
        self._texts: list[str] = []

    @property
    def stop_error(self) -> errors.EngineError | None:
        """Set when an ``api_retry`` signal says waiting inside the agent is pointless."""
        return self._stop_error

    def feed(self, event: dict[str, Any]) -> list[base.TurnEvent]:
        """Digest one stream-json object (the first naming the session says so at once)."""
        session_id = event.get("session_id")
        if not isinstance(session_id, str) or session_id == self.session_id:
            return self._digest(event)
        self.session_id = session_id
        return [base.SessionStarted(session_id), *self._digest(event)]

    def _digest(self, event: dict[str, Any]) -> list[base.TurnEvent]:
        kind = event.get("type")
        if kind == "system":
            self._on_system(event)
            return []
        if kind == "assistant":
            return self._on_assistant(event)
        if kind == "user":
            return _tool_results(event)
        if kind == "result":
            self.result = event
            usage = result_usage(event)
            return [base.UsageReport(usage)] if usage is not None else []
        return []

    def _on_system(self, event: dict[str, Any]) -> None:
        subtype = event.get("subtype")
        if subtype == "init":
            self.model = stream.str_or_none(event.get("model"))
        elif subtype == "api_retry":
            self._on_retry(event)

    def _on_retry(self, event: dict[str, Any]) -> None:
        status = event.get("error_status")
        reason = str(event.get("error") or "unknown")
        error_class = STATUS_ERRORS.get(status) if isinstance(status, int) else None
        error_class = error_class or API_ERRORS.get(reason)
        if status is None and reason in ("unknown", "server_error"):
            self._network_signals += 1
            if self._network_signals >= self.network_retries:
                self._stop_error = errors.EngineNetworkError(
                    f"claude cannot reach the model API: {self._network_signals} connection "
                    f"retries failed ({HINTS[errors.EngineNetworkError]})"
                )
            return
        if error_class is errors.EngineAuthError:
            self._stop_error = errors.EngineAuthError(
                f"claude: the API rejected the credentials (HTTP {status}, {reason}); "
                f"{HINTS[errors.EngineAuthError]}"
            )
        elif error_class is errors.EngineRateLimited:
            delay_ms = event.get("retry_delay_ms")
            self._stop_error = errors.EngineRateLimited(
                f"claude: rate limited by the model API (HTTP {status}, {reason})",
                retry_after_s=float(delay_ms) / 1000 if isinstance(delay_ms, int | float) else None,
            )

    def _on_assistant(self, event: dict[str, Any]) -> list[base.TurnEvent]:
        message = event.get("message")
        if not isinstance(message, dict):
            return []
        if isinstance(event.get("error"), str):
            self.last_api_error = event["error"]
        if message.get("model") == "<synthetic>":
            return []  # the CLI's own error text, repeated by the result line
        if event.get("parent_tool_use_id"):
            return []  # a sub-agent's message; its final answer comes back as a tool result
        out: list[base.TurnEvent] = []
        for block in _blocks(message.get("content")):
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                self._texts.append(block["text"])
                out.append(base.AgentText(block["text"]))
            elif block.get("type") == "tool_use":
                tool_input = block.get("input")
                out.append(
                    base.ToolUse(
                        id=str(block.get("id", "")),
                        name=str(block.get("name", "")),
                        input=tool_input if isinstance(tool_input, dict) else {},
                    )
                )
        return out

    async def finish(self, exit: process.ProcessExit) -> base.TurnResult:
        """Decide the outcome from the ``result`` line (or its absence)."""
        if self._stop_error is not None:
            return stream.exit_result(
                exit, error=self._stop_error, session_id=self.session_id, model=self.model
            )
        if self.result is None:
            return stream.unfinished_result(
                exit,
                agent="claude",
                stderr_rules=TEXT_RULES,
                session_id=self.session_id,
                model=self.model,
            )
        result = self.result
        error = self._result_error(result)
        final_text = result.get("result")
        if not isinstance(final_text, str):
            final_text = self._texts[-1] if self._texts else ""
        usage = result_usage(result) or Usage()
        return stream.exit_result(
            exit,
            error=error,
            final_text=final_text,
            session_id=stream.str_or_none(result.get("session_id")) or self.session_id,
            usage=usage,
            cost_source="reported" if usage.cost_usd is not None else None,
            num_turns=result.get("num_turns") if isinstance(result.get("num_turns"), int) else None,
            model=self.model,
        )

    def _result_error(self, result: dict[str, Any]) -> errors.EngineError | None:
        subtype = str(result.get("subtype") or "")
        if subtype != "success":
            texts = result.get("errors")
            detail = "; ".join(str(t) for t in texts) if isinstance(texts, list) else subtype
            by_text = stream.classify(TEXT_RULES, detail, prefix="claude")
            if by_text is not None:
                return by_text
            error_class = SUBTYPE_ERRORS.get(subtype, errors.EngineCrashed)
            return error_class(f"claude: {stream.one_line(detail)}")
        if result.get("is_error"):
            return self._api_error(result)
        denials = result.get("permission_denials")
        if isinstance(denials, list) and denials:
            names = sorted({str(d.get("tool_name", "?")) for d in denials if isinstance(d, dict)})
            return errors.EnginePermissionDenied(
                f"claude was denied {len(denials)} tool call(s) ({', '.join(names)}); "
                "raise the permission level or allow the tools"
            )
        return None

    def _api_error(self, result: dict[str, Any]) -> errors.EngineError:
        status = result.get("api_error_status")
        text = str(result.get("result") or self.last_api_error or "API error")
        error_class = STATUS_ERRORS.get(status) if isinstance(status, int) else None
        if error_class is None and self.last_api_error is not None:
            error_class = API_ERRORS.get(self.last_api_error)
        if error_class is None or (status is None and self.last_api_error == "server_error"):
            by_text = stream.classify(TEXT_RULES, text, prefix="claude")
            if by_text is not None:
                return by_text
        error_class = error_class or errors.EngineApiError
        hint = HINTS.get(error_class)
        message = f"claude: {stream.one_line(text)}" + (f" ({hint})" if hint else "")
        if error_class is errors.EngineRateLimited:
            return errors.EngineRateLimited(
                message, retry_after_s=stream.retry_after_from_text(text)
            )
        return error_class(message)


def result_usage(result: Mapping[str, Any]) -> Usage | None:
    """Usage and cost of one ``result`` line, or ``None`` when it has none.

    Input tokens include cache reads and writes (our ``Usage`` counts the whole
    prompt); ``modelUsage`` is preferred over ``usage`` because the latter omits
    sub-agents, and ``model_usage_since_last_result`` (newer CLIs) over both.
    """
    per_model = result.get("model_usage_since_last_result") or result.get("modelUsage")
    cost = result.get("total_cost_usd")
    if isinstance(per_model, dict) and per_model:
        fresh = cached = written = output = 0
        model_cost = 0.0
        for entry in per_model.values():
            if not isinstance(entry, dict):
                continue
            fresh += stream.int_or_zero(entry.get("inputTokens"))
            cached += stream.int_or_zero(entry.get("cacheReadInputTokens"))
            written += stream.int_or_zero(entry.get("cacheCreationInputTokens"))
            output += stream.int_or_zero(entry.get("outputTokens"))
            model_cost += float(entry.get("costUSD") or 0.0)
        if "model_usage_since_last_result" in result:
            cost = model_cost
        return Usage(
            input_tokens=fresh + cached + written,
            output_tokens=output,
            cached_input_tokens=cached,
            cost_usd=float(cost) if isinstance(cost, int | float) else model_cost,
        )
    usage = result.get("usage")
    if not isinstance(usage, dict):
        return None
    cached = stream.int_or_zero(usage.get("cache_read_input_tokens"))
    return Usage(
        input_tokens=stream.int_or_zero(usage.get("input_tokens"))
        + cached
        + stream.int_or_zero(usage.get("cache_creation_input_tokens")),
        output_tokens=stream.int_or_zero(usage.get("output_tokens")),
        cached_input_tokens=cached,
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
    )


def _tool_results(event: dict[str, Any]) -> list[base.TurnEvent]:
    message = event.get("message")
    if not isinstance(message, dict) or event.get("parent_tool_use_id"):
        return []
    out: list[base.TurnEvent] = []
    for block in _blocks(message.get("content")):
        if block.get("type") != "tool_result":
            continue
        out.append(
            base.ToolResult(
                id=str(block.get("tool_use_id", "")),
                output=_content_text(block.get("content")),
                is_error=bool(block.get("is_error")),
            )
        )
    return out


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = [b.get("text", "") for b in _blocks(content) if b.get("type") == "text"]
    return "\n".join(str(p) for p in parts)
