"""The ``openai`` engine: an agent of our own over any OpenAI-compatible chat endpoint.

Works with anything that speaks ``POST {base_url}/chat/completions`` with function
calling: Ollama (``http://127.0.0.1:11434/v1``), vLLM, llama.cpp's server, LM Studio,
and hosted APIs. One turn is a tool-calling loop:

1. send the conversation (system prompt, history, the prompt) with the tool schemas
   of :mod:`loops.engines.workspace_tools` allowed at the permission level;
2. stream the answer (server-sent ``data:`` chunks: text deltas are yielded as they
   come, tool-call arguments are put together from their pieces), or read it whole
   when streaming is off;
3. run each tool call in the workspace (paths confined to the cwd, commands as argv
   lists with a timeout) and send the results back; a malformed call (arguments that
   are not JSON, an unknown tool) gets an error result and the loop goes on;
4. stop when the model answers without tool calls, or fail with ``EngineMaxTurns``
   when it still asks for tools after ``max_turns`` model requests.

Usage is summed over the turn's requests (``prompt_tokens`` includes cached ones);
the cost is computed with genai-prices when the model is known to it. HTTP failures
are classified: 401/403 auth, 429 rate limit (with ``Retry-After``), connection
refused or reset network, other 4xx/5xx API errors.

Sessions (the message history) are kept in memory by the engine object, and in
``session_dir`` as JSON files when one is given, so ``resume_session_id`` continues
a conversation; an unknown session is ``EngineSessionNotFound``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from loops import errors
from loops.engines import base, pricing, process, recording, workspace_tools
from loops.usage import Usage

log = logging.getLogger(__name__)

#: the default endpoint when neither options nor settings name one
DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: model requests per turn when the request sets no ``max_turns``
DEFAULT_MAX_TURNS = 50
#: the system prompt put before the request's own
BASE_SYSTEM = (
    "You are a coding agent working in the directory {cwd}. Use the tools to read, "
    "search, edit and run programs there; every path is relative to it and cannot leave "
    "it. Commands are argv lists run without a shell. When the task is done, answer with "
    "a short summary and no tool call."
)
#: what each level means for the built-in agent (the README's permission table)
PERMISSION_NOTES: dict[base.Permission, str] = {
    base.Permission.READ_ONLY: "tools `read_file`, `list_dir`, `search` only",
    base.Permission.WORKSPACE_WRITE: "also `write_file`, `edit_file`, `run_command`; every "
    "path confined to the cwd (symlinks resolved); commands are argv lists run in the cwd "
    "without a shell, with a timeout, sandboxed only under `--sandbox bwrap`",
    base.Permission.FULL: "the same tools as workspace-write (file tools stay confined to "
    "the cwd by design)",
}
Emit = Callable[[base.TurnEvent], None]
_SESSION_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclasses.dataclass(frozen=True, slots=True)
class OpenAIOptions:
    """Settings of the ``openai`` engine.

    Attributes:
        base_url: the API root, e.g. ``http://127.0.0.1:11434/v1``.
        api_key: sent as a bearer token when set (local servers need none).
        model: the model when the request names none (required by one or the other).
        stream: stream answers (server-sent events) or read them whole.
        stream_usage: ask for usage in the stream (``stream_options.include_usage``);
            turn off for servers that reject the option.
        max_turns: model requests per turn when the request sets none.
        temperature: sampling temperature, when set.
        headers: extra HTTP headers.
        request_timeout_s: limit on one HTTP request (connect, and each read).
        default_timeout_s: wall-clock limit of a turn when the request sets none.
        tool_limits: bounds on tool output and command time.
        command_env: the complete environment of commands the agent runs (``None``:
            the request's ``env`` over a minimal one with ``PATH``, ``HOME`` and ``LANG``
            from this process); the API key is never passed to commands.
        session_dir: keep sessions as JSON files here too (``None``: in memory only).
        provider_id: genai-prices provider used to price the model.
        price_overrides: model -> price for models genai-prices does not know.
    """

    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = dataclasses.field(default=None, repr=False)
    model: str | None = None
    stream: bool = True
    stream_usage: bool = True
    max_turns: int = DEFAULT_MAX_TURNS
    temperature: float | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    request_timeout_s: float = 300.0
    default_timeout_s: float | None = 3600.0
    tool_limits: workspace_tools.ToolLimits = dataclasses.field(
        default_factory=workspace_tools.ToolLimits
    )
    command_env: Mapping[str, str] | None = None
    session_dir: Path | None = None
    provider_id: str | None = None
    price_overrides: Mapping[str, pricing.ModelPrice] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Call:
    """A tool call being put together from streamed pieces."""

    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclasses.dataclass
class _Answer:
    """One model answer."""

    text: str = ""
    calls: list[_Call] = dataclasses.field(default_factory=list)
    usage: Usage = dataclasses.field(default_factory=Usage)
    model: str | None = None
    finish_reason: str | None = None


class _TurnFailed(Exception):
    def __init__(self, error: errors.EngineError) -> None:
        super().__init__(error.message)
        self.error = error


class OpenAIEngine:
    """Runs turns of the built-in agent over a chat-completions API."""

    name = "openai"
    capabilities = base.Capabilities(
        resume=True, streaming=True, cost_computed=True, subagents=False
    )

    def __init__(self, options: OpenAIOptions | None = None) -> None:
        self.options = options or OpenAIOptions()
        self.sessions: dict[str, list[dict[str, Any]]] = {}

    @classmethod
    def from_options(cls, **options: Any) -> OpenAIEngine:
        """Build from plain keyword options (the fields of :class:`OpenAIOptions`).

        ``base_url``, ``api_key`` and ``model`` default to the ``[openai]`` settings
        (loops.toml, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``OPENAI_MODEL``).
        """
        from loops import config
        from loops.engines import options as options_mod

        checked = options_mod.checked("openai", OpenAIOptions, dict(options))
        if any(checked.get(k) is None for k in ("base_url", "api_key", "model")):
            settings = config.load_settings().openai
            checked.setdefault("base_url", settings.base_url)
            if checked.get("api_key") is None:
                checked["api_key"] = settings.api_key
            if checked.get("model") is None:
                checked["model"] = settings.model
        if isinstance(checked.get("tool_limits"), Mapping):
            checked["tool_limits"] = workspace_tools.ToolLimits(**checked["tool_limits"])
        if checked.get("session_dir") is not None:
            checked["session_dir"] = Path(checked["session_dir"])
        return cls(OpenAIOptions(**checked))

    # -- one turn ---------------------------------------------------------------------

    async def run_turn(self, request: base.TurnRequest) -> AsyncIterator[base.TurnEvent]:
        """Run one turn of the tool-calling loop; yield events ending with the result."""
        started = time.monotonic()
        state = _TurnState(model=request.model or self.options.model)
        timeout_s = request.timeout_s
        if timeout_s is None:
            timeout_s = self.options.default_timeout_s
        events: asyncio.Queue[base.TurnEvent | None] = asyncio.Queue()
        task = asyncio.ensure_future(self._drive(request, state, events, timeout_s))
        try:
            while (event := await events.get()) is not None:
                yield event
            error = await task
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        yield await self._result(state, error, time.monotonic() - started)

    async def _drive(
        self,
        request: base.TurnRequest,
        state: _TurnState,
        events: asyncio.Queue[base.TurnEvent | None],
        timeout_s: float | None,
    ) -> errors.EngineError | None:
        try:
            async with asyncio.timeout(timeout_s):
                await self._loop(request, state, events.put_nowait)
        except _TurnFailed as exc:
            return exc.error
        except TimeoutError:
            state.interrupted = True
            return errors.EngineTimeout(
                f"openai agent ran past its wall-clock limit {timeout_s:g}s and was stopped "
                "(raise timeout_s)"
            )
        except OSError as exc:  # after TimeoutError (a subclass): an unwritable session file
            return errors.EngineCrashed(f"openai agent failed: {exc}")
        finally:
            events.put_nowait(None)
        return None

    async def _loop(self, request: base.TurnRequest, state: _TurnState, emit: Emit) -> None:
        if not state.model:
            raise _TurnFailed(
                errors.EngineApiError(
                    "openai: no model named; pass --model (or model=...) or set OPENAI_MODEL"
                )
            )
        messages = await self._start_messages(request, state)
        offered = workspace_tools.tools_for(request.permission, request.tools)
        workspace = workspace_tools.Workspace(
            Path(request.cwd),
            env=self._command_env(request),
            limits=self.options.tool_limits,
            sandbox=request.sandbox,
        )
        limit = request.max_turns if request.max_turns is not None else self.options.max_turns
        async with httpx.AsyncClient(
            base_url=self.options.base_url.rstrip("/") + "/",
            headers=self._headers(),
            timeout=httpx.Timeout(self.options.request_timeout_s, connect=30.0),
        ) as client:
            while True:
                if state.requests >= limit:
                    raise _TurnFailed(
                        errors.EngineMaxTurns(
                            f"openai agent reached the turn limit ({limit} model requests) "
                            "and still asked for tools; raise max_turns or split the task"
                        )
                    )
                body = self._body(state.model, messages, offered)
                answer = await self._ask(client, body, emit)
                state.requests += 1
                state.usage = state.usage + answer.usage
                state.served_model = answer.model or state.served_model
                emit(base.UsageReport(state.usage))
                messages.append(_assistant_message(answer))
                self._save(state.session_id, messages)
                if answer.text:
                    state.final_text = answer.text
                if not answer.calls:
                    return
                for call in answer.calls:
                    content = await self._run_call(call, workspace, offered, emit)
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
                self._save(state.session_id, messages)

    async def _run_call(
        self,
        call: _Call,
        workspace: workspace_tools.Workspace,
        offered: tuple[str, ...],
        emit: Emit,
    ) -> str:
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError as exc:
            arguments = None
            outcome = workspace_tools.ToolOutcome(
                f"error: the arguments are not valid JSON ({exc}); call the tool again with a "
                "JSON object",
                True,
            )
        else:
            if not isinstance(arguments, dict):
                outcome = workspace_tools.ToolOutcome(
                    "error: the arguments must be a JSON object", True
                )
        emit(
            base.ToolUse(
                id=call.id,
                name=call.name,
                input=arguments if isinstance(arguments, dict) else {"raw": call.arguments},
            )
        )
        if isinstance(arguments, dict):
            outcome = await workspace.call(call.name, arguments, offered)
        emit(base.ToolResult(id=call.id, output=outcome.output, is_error=outcome.is_error))
        return outcome.output

    async def _result(
        self, state: _TurnState, error: errors.EngineError | None, duration_s: float
    ) -> base.TurnResult:
        model = state.model
        cost = None
        source = None
        if model and state.requests:
            cost = await pricing.cost_usd_async(
                state.usage,
                model,
                provider_id=self.options.provider_id,
                overrides=self.options.price_overrides,
            )
            if cost is not None:
                in_table = model in self.options.price_overrides
                version = await asyncio.to_thread(pricing.prices_version)
                source = "computed: price_overrides" if in_table else f"computed: {version}"
        status = base.TurnStatus.OK
        if error is not None:
            status = base.TurnStatus.INTERRUPTED if state.interrupted else base.TurnStatus.ERROR
        return base.TurnResult(
            status=status,
            final_text=state.final_text,
            session_id=state.session_id,
            usage=dataclasses.replace(state.usage, cost_usd=cost),
            cost_source=source,
            error=error,
            num_turns=state.requests,
            duration_s=duration_s,
            model=state.served_model or model,
        )

    # -- the conversation -------------------------------------------------------------

    async def _start_messages(
        self, request: base.TurnRequest, state: _TurnState
    ) -> list[dict[str, Any]]:
        if request.resume_session_id:
            history = await asyncio.to_thread(self._load, request.resume_session_id)
            if history is None:
                raise _TurnFailed(
                    errors.EngineSessionNotFound(
                        f"openai: no session {request.resume_session_id!r} in this engine"
                        + (f" or {self.options.session_dir}" if self.options.session_dir else "")
                        + "; start a fresh session"
                    )
                )
            state.session_id = request.resume_session_id
            messages = list(history)
        else:
            state.session_id = f"openai-{uuid.uuid4()}"
            system = BASE_SYSTEM.format(cwd=Path(request.cwd).resolve())
            if request.system:
                system += "\n\n" + request.system
            messages = [{"role": "system", "content": system}]
        messages.append({"role": "user", "content": request.prompt})
        return messages

    def _load(self, session_id: str) -> list[dict[str, Any]] | None:
        if session_id in self.sessions:
            return self.sessions[session_id]
        path = self._session_path(session_id)
        if path is None or not path.is_file():
            return None
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("openai: session file %s is unreadable: %s", path, exc)
            return None
        return loaded if isinstance(loaded, list) else None

    def _save(self, session_id: str | None, messages: list[dict[str, Any]]) -> None:
        if session_id is None:
            return
        self.sessions[session_id] = list(messages)
        path = self._session_path(session_id)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(messages))
            tmp.replace(path)

    def _session_path(self, session_id: str) -> Path | None:
        if self.options.session_dir is None or not _SESSION_ID.fullmatch(session_id):
            return None
        return self.options.session_dir / f"{session_id}.json"

    def _command_env(self, request: base.TurnRequest) -> dict[str, str]:
        if self.options.command_env is not None:
            return {**self.options.command_env, **request.env}
        minimal = {
            k: v for k, v in process.merged_env(None, {}).items() if k in ("PATH", "HOME", "LANG")
        }
        return {**minimal, **request.env}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.options.headers}
        if self.options.api_key:
            headers["Authorization"] = f"Bearer {self.options.api_key}"
        return headers

    def _body(
        self, model: str, messages: list[dict[str, Any]], offered: tuple[str, ...]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": messages}
        if offered:
            body["tools"] = workspace_tools.schemas(offered)
        if self.options.temperature is not None:
            body["temperature"] = self.options.temperature
        if self.options.stream:
            body["stream"] = True
            if self.options.stream_usage:
                body["stream_options"] = {"include_usage": True}
        return body

    # -- HTTP -------------------------------------------------------------------------

    async def _ask(self, client: httpx.AsyncClient, body: dict[str, Any], emit: Emit) -> _Answer:
        try:
            if not body.get("stream"):
                response = await client.post("chat/completions", json=body)
                if response.status_code >= 400:
                    raise _TurnFailed(
                        http_error(response.status_code, response.headers, response.text)
                    )
                raw = recording.raw_sink()
                if raw is not None:
                    raw(response.text)
                answer = parse_completion(_json(response.text))
                if answer.text:
                    emit(base.AgentText(answer.text))
                return answer
            async with client.stream("POST", "chat/completions", json=body) as response:
                if response.status_code >= 400:
                    text = (await response.aread()).decode(errors="replace")
                    raise _TurnFailed(http_error(response.status_code, response.headers, text))
                return await read_stream(response.aiter_lines(), emit)
        except httpx.ConnectError as exc:
            raise _TurnFailed(
                errors.EngineNetworkError(
                    f"openai: cannot connect to {self.options.base_url} ({exc}); "
                    "check --base-url and that the server is running"
                )
            ) from exc
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError) as exc:
            raise _TurnFailed(
                errors.EngineNetworkError(
                    f"openai: the connection to {self.options.base_url} broke: {exc!r}"
                )
            ) from exc
        except httpx.TimeoutException as exc:
            raise _TurnFailed(
                errors.EngineNetworkError(
                    f"openai: {self.options.base_url} did not answer within "
                    f"{self.options.request_timeout_s:g}s ({type(exc).__name__})"
                )
            ) from exc


@dataclasses.dataclass
class _TurnState:
    model: str | None
    session_id: str | None = None
    final_text: str = ""
    usage: Usage = dataclasses.field(default_factory=Usage)
    requests: int = 0
    served_model: str | None = None
    interrupted: bool = False


def http_error(status: int, headers: Mapping[str, str], text: str) -> errors.EngineError:
    """The classified error of an HTTP failure (``text`` is the body)."""
    detail = _error_message(text) or f"HTTP {status}"
    message = f"openai: HTTP {status}: {detail}"
    if status in (401, 403):
        return errors.EngineAuthError(f"{message} (set the API key: OPENAI_API_KEY or --api-key)")
    if status == 429:
        return errors.EngineRateLimited(message, retry_after_s=retry_after(headers))
    if status == 404:
        return errors.EngineApiError(f"{message} (check --model and --base-url)")
    return errors.EngineApiError(message)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``, in seconds."""
    millis = headers.get("retry-after-ms")
    if millis:
        with contextlib.suppress(ValueError):
            return max(0.0, float(millis) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


def _error_message(text: str) -> str:
    data = _json_or_none(text)
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return " ".join(text.split())[:300]


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _json(text: str) -> dict[str, Any]:
    data = _json_or_none(text)
    if not isinstance(data, dict):
        raise _TurnFailed(
            errors.EngineApiError(f"openai: the answer is not a JSON object: {text[:200]!r}")
        )
    return data


def parse_completion(data: Mapping[str, Any]) -> _Answer:
    """A non-streamed ``chat.completion`` as an answer."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _TurnFailed(errors.EngineApiError("openai: the answer has no choices"))
    message = choices[0].get("message")
    message = message if isinstance(message, dict) else {}
    answer = _Answer(
        text=str(message.get("content") or ""),
        usage=chat_usage(data.get("usage")),
        model=data.get("model") if isinstance(data.get("model"), str) else None,
        finish_reason=choices[0].get("finish_reason"),
    )
    for number, raw in enumerate(message.get("tool_calls") or []):
        if not isinstance(raw, dict):
            continue
        function = raw.get("function")
        function = function if isinstance(function, dict) else {}
        arguments = function.get("arguments")
        answer.calls.append(
            _Call(
                id=str(raw.get("id") or f"call_{number}"),
                name=str(function.get("name") or ""),
                arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
            )
        )
    return answer


async def read_stream(lines: AsyncIterator[str], emit: Emit) -> _Answer:
    """Put an answer together from streamed ``chat.completion.chunk`` events.

    Text deltas are emitted as :class:`~loops.engines.base.AgentText` as they come;
    tool calls are assembled by ``index`` (id and name first, arguments in pieces).
    """
    answer = _Answer()
    calls: dict[int, _Call] = {}
    text: list[str] = []
    raw = recording.raw_sink()
    async for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if raw is not None:
            raw(payload)
        if payload == "[DONE]":
            break
        chunk = _json_or_none(payload)
        if not isinstance(chunk, dict):
            log.warning("openai: skipped a malformed stream chunk: %s", payload[:200])
            continue
        if isinstance(chunk.get("error"), dict):
            raise _TurnFailed(
                errors.EngineApiError(f"openai: {chunk['error'].get('message', 'stream error')}")
            )
        if isinstance(chunk.get("model"), str):
            answer.model = chunk["model"]
        if chunk.get("usage"):
            answer.usage = chat_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            if choice.get("finish_reason"):
                answer.finish_reason = str(choice["finish_reason"])
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            content = delta.get("content")
            if isinstance(content, str) and content:
                text.append(content)
                emit(base.AgentText(content))
            for piece in delta.get("tool_calls") or []:
                if not isinstance(piece, dict):
                    continue
                index = piece.get("index", len(calls))
                call = calls.setdefault(index if isinstance(index, int) else len(calls), _Call())
                if piece.get("id"):
                    call.id = str(piece["id"])
                function = piece.get("function")
                if isinstance(function, dict):
                    if function.get("name"):
                        call.name += str(function["name"])
                    arguments = function.get("arguments")
                    if isinstance(arguments, str):
                        call.arguments += arguments
                    elif isinstance(arguments, dict):  # some servers send an object
                        call.arguments = json.dumps(arguments)
    answer.text = "".join(text)
    for index in sorted(calls):
        call = calls[index]
        call.id = call.id or f"call_{index}"
        answer.calls.append(call)
    return answer


def chat_usage(data: Any) -> Usage:
    """Our usage from a chat-completions ``usage`` object (prompt includes cached)."""
    if not isinstance(data, dict):
        return Usage()
    details = data.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage(
        input_tokens=_int(data.get("prompt_tokens")),
        output_tokens=_int(data.get("completion_tokens")),
        cached_input_tokens=_int(cached),
    )


def _assistant_message(answer: _Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
    if answer.calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in answer.calls
        ]
    return message


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0
