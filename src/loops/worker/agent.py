"""The engine a task's agent runs on: the real engine, wrapped for the worker.

:class:`TaskAgent` is itself an :class:`~loops.engines.base.Engine`, so the loop
library's ``agent_job`` and ``agent_check`` drive it like any other. Around each turn
it adds what only the worker knows:

- the agent's environment: ``LOOP_TASK_ID``, ``LOOP_API_BASE_URL`` (and the token), so
  the agent can create child tasks;
- the session: a worker turn resumes the task's session (checkpointed, so a retried
  task resumes too) when the engine supports it; a session the engine no longer
  knows is dropped and the turn runs fresh;
- rate limits: waited out through :func:`loops.engines.policy.run_turn_with_policy`
  (bounded; every wait reported, so it lands in the timeline; no attempt burned);
- a hook after each turn (checkpoint, STEP markers, fresh grounding).

Cancelling the turn (task cancelled, lease lost, shutdown) cancels the inner engine's
stream, which kills the agent's process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from loops import errors
from loops.engines import base, policy

TurnHook = Callable[[base.TurnResult], Awaitable[None]]
_DONE = object()


class TaskAgent:
    """An engine wrapper for one task and one role (see the module docstring).

    Args:
        inner: the real engine.
        env: variables added to every turn's environment.
        resume: keep and resume the session across turns (the worker role; judges
            start fresh every turn).
        session_id: the session to resume first (from a checkpoint).
        rate_limits: how long to wait out rate limits.
        on_policy: called with each rate-limit wait or give-up.
        after_turn: awaited with each turn's result before the turn is reported.
        sleep: the wait function (a parameter for tests).
    """

    def __init__(
        self,
        inner: base.Engine,
        *,
        env: Mapping[str, str],
        resume: bool,
        session_id: str | None = None,
        rate_limits: policy.RateLimitPolicy | None = None,
        on_policy: policy.PolicyCallback | None = None,
        after_turn: TurnHook | None = None,
        sleep: policy.Sleep = asyncio.sleep,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self.env = dict(env)
        self.resume = resume and inner.capabilities.resume
        self.session_id = session_id if self.resume else None
        self.rate_limits = rate_limits or policy.RateLimitPolicy()
        self.on_policy = on_policy
        self.after_turn = after_turn
        self.sleep = sleep
        #: the last turn's result
        self.last_result: base.TurnResult | None = None

    def _request(self, request: base.TurnRequest, session_id: str | None) -> base.TurnRequest:
        return dataclasses.replace(
            request, env={**request.env, **self.env}, resume_session_id=session_id
        )

    async def run_turn(self, request: base.TurnRequest) -> AsyncIterator[base.TurnEvent]:
        """Run one turn of the inner engine with the task's additions."""
        session = self.session_id if self.resume else request.resume_session_id
        result: base.TurnResult | None = None
        async for event in self._stream(self._request(request, session)):
            if isinstance(event, base.TurnResult):
                result = event
            else:
                yield event
        assert result is not None
        if session is not None and isinstance(result.error, errors.EngineSessionNotFound):
            async for event in self._stream(self._request(request, None)):
                if isinstance(event, base.TurnResult):
                    result = event
                else:
                    yield event
        if self.resume and result.session_id:
            self.session_id = result.session_id
        self.last_result = result
        if self.after_turn is not None:
            await self.after_turn(result)
        yield result

    async def _stream(self, request: base.TurnRequest) -> AsyncIterator[base.TurnEvent]:
        """The policy-driven turn as a stream: events as they come, the final result last."""
        queue: asyncio.Queue[object] = asyncio.Queue()

        def on_event(event: base.TurnEvent) -> None:
            if not isinstance(event, base.TurnResult):  # attempts' results stay internal
                queue.put_nowait(event)

        async def drive() -> base.TurnResult:
            try:
                return await policy.run_turn_with_policy(
                    self.inner,
                    request,
                    policy=self.rate_limits,
                    on_event=on_event,
                    on_policy=self.on_policy,
                    sleep=self.sleep,
                )
            finally:
                queue.put_nowait(_DONE)

        runner = asyncio.ensure_future(drive())
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                assert not isinstance(item, base.TurnResult)
                yield item  # type: ignore[misc]
            try:
                yield runner.result()
            except errors.EngineError as exc:
                yield base.TurnResult(status=base.TurnStatus.ERROR, error=exc)
        finally:
            if not runner.done():
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await runner
