"""The ``gemini`` engine: Gemini CLI in headless mode with streaming JSON output.

One turn is one process (shared/agent-clis.md section 3)::

    gemini --output-format stream-json --skip-trust --approval-mode=MODE
           [--model=M] [--allowed-tools T...] [--resume=SESSION] --prompt=

with the prompt on stdin (``--prompt=`` turns headless mode on; the CLI appends it,
empty, to stdin's text) and ``cwd`` the request's cwd (sessions are stored per
project directory, so a resume must run in the same cwd).

Events: ``init`` (session id, model), ``message`` (assistant chunks with
``delta: true``, concatenated), ``tool_use`` / ``tool_result``, ``error`` (warnings
unless an error ``result`` follows) and the terminal ``result`` whose ``status``
decides the outcome. Without a ``result`` line the exit code classifies the failure
(41 auth, 42 input, 52 config, 53 turn limit, 55 untrusted workspace; HTTP status
mod 256 for API errors), else it is a crash or an interruption.

Gemini CLI has no turn-limit flag (only ``model.maxSessionTurns`` in its settings
files, which a caller cannot set per turn: a system-settings file named by
``GEMINI_CLI_SYSTEM_SETTINGS_PATH`` is ignored unless root owns it and every folder
above it), so ``max_turns`` is enforced here, as for Codex: the agent is stopped when
it starts its ``max_turns``-th tool call. A limit set in the user's own settings ends
the turn with ``FatalTurnLimitedError`` (exit 53), classified as ``EngineMaxTurns``
too. The system prompt has no flag either: it is prepended to the prompt.

Gemini CLI reports tokens but no cost; the cost is computed with genai-prices
(thinking tokens, which it does not report separately, are billed as output:
``total - input - output``). Gemini relaunches itself as a child node process that
ignores signals sent to the parent alone, which the process layer's group kill
handles.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from loops import errors
from loops.engines import base, pricing, process, stream
from loops.engines import options as options_mod
from loops.usage import Usage

log = logging.getLogger(__name__)

INSTALL_HINT = "npm install -g @google/gemini-cli"

#: our permission level -> Gemini CLI's --approval-mode
APPROVAL_MODES: dict[base.Permission, str] = {
    base.Permission.READ_ONLY: "plan",
    base.Permission.WORKSPACE_WRITE: "auto_edit",
    base.Permission.FULL: "yolo",
}
#: what each level means for Gemini CLI (the README's permission table)
PERMISSION_NOTES: dict[base.Permission, str] = {
    base.Permission.READ_ONLY: "`--approval-mode plan`: read-only tools; the shell is not offered",
    base.Permission.WORKSPACE_WRITE: "`--approval-mode auto_edit` (file edits, in the "
    "workspace) plus `--allowed-tools run_shell_command` (or the request's `tools`); the "
    "shell is **not** sandboxed",
    base.Permission.FULL: "`--approval-mode yolo`: every tool approved",
}
#: tools auto-approved at the workspace-write level when the request names none
WORKSPACE_DEFAULT_TOOLS = ("run_shell_command",)

AUTH_HINT = "set GEMINI_API_KEY (or log in with `gemini`)"
#: exit codes of Gemini CLI's fatal errors -> our error
EXIT_CODES: dict[int, tuple[type[errors.EngineError], str]] = {
    41: (errors.EngineAuthError, AUTH_HINT),
    42: (errors.EngineCrashed, "the CLI rejected its input or session id"),
    44: (errors.EngineCrashed, "the sandbox failed to start"),
    52: (errors.EngineCrashed, "the CLI's configuration is invalid"),
    53: (errors.EngineMaxTurns, "raise max_turns"),
    54: (errors.EngineCrashed, "a tool failed fatally"),
    55: (errors.EnginePermissionDenied, "the workspace is not trusted"),
    # HTTP status & 255 for API errors that end the process before a result line.
    144: (errors.EngineApiError, "the API refused the request (HTTP 400)"),
    145: (errors.EngineAuthError, AUTH_HINT),
    147: (errors.EngineAuthError, AUTH_HINT),
    173: (errors.EngineRateLimited, "wait and retry"),
}
#: error texts (a result's error message, stderr) -> our error; first match wins
TEXT_RULES: tuple[stream.Rule, ...] = (
    stream.Rule(
        r"Invalid session identifier|No previous sessions found|session .*not found",
        errors.EngineSessionNotFound,
        "sessions are per machine and per cwd; start a fresh session",
    ),
    stream.Rule(
        r"FatalTurnLimitedError|max session turns", errors.EngineMaxTurns, "raise max_turns"
    ),
    stream.Rule(
        r"\b(401|403)\b|UNAUTHENTICATED|PERMISSION_DENIED|API key not valid"
        r"|Please set an Auth method|Invalid auth method",
        errors.EngineAuthError,
        AUTH_HINT,
    ),
    stream.Rule(
        r"\b429\b|RESOURCE_EXHAUSTED|quota|rate.limit|usage limit", errors.EngineRateLimited
    ),
    stream.Rule(
        r"fetch failed|ECONNREFUSED|ENOTFOUND|ETIMEDOUT|network", errors.EngineNetworkError,
        "check the network or GOOGLE_GEMINI_BASE_URL",
    ),
    stream.Rule(
        r"not running in a trusted directory", errors.EnginePermissionDenied,
        "the engine passes --skip-trust; check the CLI version",
    ),
    stream.Rule(r"\b(400|404|5\d\d)\b|INVALID_ARGUMENT|NOT_FOUND|INTERNAL", errors.EngineApiError),
)  # fmt: skip


_ATTEMPT = re.compile(r"Attempt (?P<n>\d+) failed(?: with status (?P<status>\d{3}))?")


@dataclasses.dataclass(frozen=True, slots=True)
class GeminiOptions(options_mod.CliOptions):
    """Engine-level settings of the ``gemini`` engine (beyond ``CliOptions``).

    Attributes:
        executable: the command name or path of the CLI.
        extra_args: more arguments, placed before the per-turn ones.
        model: the model when the request names none (also used for pricing).
        provider_id: genai-prices provider used to price the model.
        price_overrides: model -> price for models genai-prices does not know.
        network_retries: stop after this many failed attempts with no HTTP status.
    """

    executable: str = "gemini"
    model: str | None = None
    provider_id: str | None = "google"
    price_overrides: Mapping[str, pricing.ModelPrice] = dataclasses.field(default_factory=dict)
    network_retries: int = 3


class GeminiEngine(options_mod.OptionsEngine[GeminiOptions]):
    """Runs Gemini CLI turns (see the module docstring)."""

    name = "gemini"
    options_class = GeminiOptions
    capabilities = base.Capabilities(
        resume=True, streaming=True, cost_computed=True, subagents=False
    )

    def model_for(self, request: base.TurnRequest) -> str | None:
        """The model named for this turn, if any."""
        return request.model or self.options.model

    def build_argv(self, request: base.TurnRequest) -> list[str]:
        """The exact argv of one turn (the prompt goes to stdin)."""
        argv = [
            self.options.executable,
            "--output-format",
            "stream-json",
            "--skip-trust",
            *self.options.extra_args,
            f"--approval-mode={APPROVAL_MODES[request.permission]}",
        ]
        model = self.model_for(request)
        if model:
            argv.append(f"--model={model}")
        allowed = request.tools
        if allowed is None and request.permission is base.Permission.WORKSPACE_WRITE:
            allowed = WORKSPACE_DEFAULT_TOOLS
        if allowed and request.permission is not base.Permission.READ_ONLY:
            argv += ["--allowed-tools", *allowed]
        if request.resume_session_id:
            argv.append(f"--resume={request.resume_session_id}")
        argv.append("--prompt=")
        return argv

    def build_stdin(self, request: base.TurnRequest) -> bytes:
        """The prompt, with the system prompt (which has no flag) in front."""
        return stream.prompt_with_system(request).encode()

    def run_turn(self, request: base.TurnRequest) -> AsyncIterator[base.TurnEvent]:
        """Run one turn; yield events ending with a ``TurnResult``."""
        spec = stream.turn_spec(
            request,
            self.options,
            argv=self.build_argv(request),
            env=process.merged_env(self.options.env, request.env),
            stdin=self.build_stdin(request),
            install_hint=INSTALL_HINT,
        )
        parser = GeminiStreamParser(
            model=self.model_for(request),
            price=pricing.pricer(
                provider_id=self.options.provider_id, overrides=self.options.price_overrides
            ),
            network_retries=self.options.network_retries,
            max_turns=request.max_turns,
        )
        return stream.run_jsonl_turn(spec, parser, agent=self.name)


class GeminiStreamParser:
    """Parses one turn of Gemini CLI's stream-json output."""

    def __init__(
        self,
        *,
        model: str | None = None,
        price: pricing.PriceFn | None = None,
        network_retries: int = 3,
        max_turns: int | None = None,
    ) -> None:
        self.model = model
        self.max_turns = max_turns
        self._tool_calls = 0
        self._price = price
        self.session_id: str | None = None
        self.result: dict[str, Any] | None = None
        self.warnings: list[str] = []
        self.network_retries = network_retries
        self._network_signals = 0
        self._stop_error: errors.EngineError | None = None
        self._message: list[str] = []
        self._last_message = ""

    @property
    def stop_error(self) -> errors.EngineError | None:
        """Set when a stderr retry signal says waiting inside the agent is pointless."""
        return self._stop_error

    def feed_stderr(self, line: str) -> None:
        """Watch Gemini's retry lines (``Attempt N failed with status S``, stderr only).

        A 429 or an auth status stops the agent at once (the caller's policy decides
        about waiting); ``network_retries`` failures with no HTTP status mean no network.
        """
        match = _ATTEMPT.search(line)
        if match is None or self._stop_error is not None:
            return
        status = int(match.group("status")) if match.group("status") else None
        if status == 429:
            self._stop_error = errors.EngineRateLimited(
                f"gemini: rate limited by the model API (HTTP 429): {stream.one_line(line)}",
                retry_after_s=stream.retry_after_from_text(line),
            )
        elif status in (401, 403):
            self._stop_error = errors.EngineAuthError(
                f"gemini: the API rejected the credentials (HTTP {status}) ({AUTH_HINT})"
            )
        elif status is None:
            self._network_signals += 1
            if self._network_signals >= self.network_retries:
                self._stop_error = errors.EngineNetworkError(
                    f"gemini cannot reach the model API: {self._network_signals} attempts "
                    "failed (check the network or GOOGLE_GEMINI_BASE_URL)"
                )

    def feed(self, event: dict[str, Any]) -> list[base.TurnEvent]:
        """Digest one stream-json object."""
        kind = event.get("type")
        if kind == "init":
            self.session_id = stream.str_or_none(event.get("session_id")) or self.session_id
            self.model = (
                stream.str_or_none(event.get("model")) if self.model is None else self.model
            )
        elif kind == "message" and event.get("role") == "assistant":
            text = event.get("content")
            if isinstance(text, str) and text:
                if not event.get("delta"):
                    self._message = []
                self._message.append(text)
                return [base.AgentText(text)]
        elif kind == "tool_use":
            self._close_message()
            self._tool_calls += 1
            if self.max_turns is not None and self._tool_calls >= self.max_turns:
                self._stop_error = self._stop_error or errors.EngineMaxTurns(
                    f"gemini reached the turn limit ({self.max_turns}): it started tool call "
                    f"number {self._tool_calls}"
                )
            parameters = event.get("parameters")
            return [
                base.ToolUse(
                    id=str(event.get("tool_id", "")),
                    name=str(event.get("tool_name", "")),
                    input=parameters if isinstance(parameters, dict) else {},
                )
            ]
        elif kind == "tool_result":
            return [_tool_result(event)]
        elif kind == "error":
            self.warnings.append(str(event.get("message", "")))
        elif kind == "result":
            self._close_message()
            self.result = event
            usage = stats_usage(event.get("stats"))
            return [base.UsageReport(usage)] if usage is not None else []
        return []

    def _close_message(self) -> None:
        if self._message:
            self._last_message = "".join(self._message)
            self._message = []

    async def finish(self, exit: process.ProcessExit) -> base.TurnResult:
        """Decide the outcome from the ``result`` line, else from the exit code."""
        self._close_message()
        if self._stop_error is not None and self.result is None:
            return stream.exit_result(
                exit,
                error=self._stop_error,
                session_id=self.session_id,
                final_text=self._last_message,
                model=self.model,
            )
        if self.result is None:
            return self._no_result(exit)
        result = self.result
        usage = stats_usage(result.get("stats")) or Usage()
        models = _stats_models(result.get("stats"))
        model = self.model if self.model and self.model != "auto" else None
        model = model or (models[0] if len(models) == 1 else None)
        usage, cost_source = await pricing.priced(usage, model, self._price)
        error = None
        status = None
        if result.get("status") != "success":
            error = self._result_error(result, exit)
            raw_error = result.get("error")
            if isinstance(raw_error, dict) and raw_error.get("type") == "FatalCancellationError":
                status = base.TurnStatus.INTERRUPTED
                error = errors.EngineCrashed("gemini was cancelled before finishing its turn")
        return stream.exit_result(
            exit,
            error=error,
            status=status,
            final_text=self._last_message,
            session_id=self.session_id,
            usage=usage,
            cost_source=cost_source,
            model=model or self.model,
        )

    def _result_error(
        self, result: dict[str, Any], exit: process.ProcessExit
    ) -> errors.EngineError:
        raw = result.get("error")
        error = raw if isinstance(raw, dict) else {}
        kind = str(error.get("type") or "")
        message = str(error.get("message") or "the turn failed")
        text = f"{kind}: {message}" if kind and kind != "unknown" else message
        found = stream.classify(TEXT_RULES, text, prefix="gemini")
        if found is None and exit.returncode in EXIT_CODES:
            found = _exit_error(exit)
        return found or errors.EngineApiError(f"gemini: {stream.one_line(text)}")

    def _no_result(self, exit: process.ProcessExit) -> base.TurnResult:
        fields: dict[str, Any] = {
            "session_id": self.session_id,
            "final_text": self._last_message,
            "model": self.model,
        }
        if exit.timed_out or exit.stopped or exit.returncode not in EXIT_CODES:
            return stream.unfinished_result(exit, agent="gemini", stderr_rules=TEXT_RULES, **fields)
        return stream.exit_result(exit, error=_exit_error(exit), **fields)


def _exit_error(exit: process.ProcessExit) -> errors.EngineError:
    """The error a fatal exit code means; the stderr text refines it when it can."""
    assert exit.returncode is not None
    error_class, hint = EXIT_CODES[exit.returncode]
    detail = _stderr_message(exit.stderr_tail)
    by_text = stream.classify(TEXT_RULES, detail, prefix="gemini") if detail else None
    if by_text is not None:
        return by_text
    message = f"gemini exited with code {exit.returncode}"
    if detail:
        message += f": {stream.one_line(detail)}"
    message += f" ({hint})"
    if error_class is errors.EngineRateLimited:
        return errors.EngineRateLimited(message, retry_after_s=stream.retry_after_from_text(detail))
    return error_class(message)


def _stderr_message(stderr: str) -> str:
    """The error message on stderr: the JSON error document's, else the last line."""
    for line in reversed(stderr.splitlines()):
        document = process.parse_json_line(line)
        if document is not None and isinstance(document.get("error"), dict):
            return str(document["error"].get("message", ""))
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    meaningful = [line for line in lines if not line.startswith(("at ", "Warning:"))]
    return meaningful[-1] if meaningful else ""


def stats_usage(stats: Any) -> Usage | None:
    """Usage of a ``result`` line's ``stats``; thinking tokens are counted as output."""
    if not isinstance(stats, dict):
        return None
    prompt = stream.int_or_zero(stats.get("input_tokens"))
    output = stream.int_or_zero(stats.get("output_tokens"))
    total = stream.int_or_zero(stats.get("total_tokens"))
    thinking = max(0, total - prompt - output)
    return Usage(
        input_tokens=prompt,
        output_tokens=output + thinking,
        cached_input_tokens=stream.int_or_zero(stats.get("cached")),
    )


def _stats_models(stats: Any) -> list[str]:
    models = stats.get("models") if isinstance(stats, dict) else None
    return sorted(models) if isinstance(models, dict) else []


def _tool_result(event: dict[str, Any]) -> base.ToolResult:
    failed = event.get("status") != "success"
    output = event.get("output")
    text = output if isinstance(output, str) else ""
    error = event.get("error")
    if failed and isinstance(error, dict) and error.get("message"):
        text = f"{text}\n{error['message']}".strip()
    return base.ToolResult(id=str(event.get("tool_id", "")), output=text, is_error=failed)
