"""The worker loop: lease (long polling), heartbeat, run N tasks at once, complete, stop.

- Leasing long-polls (``wait_ms``): an idle worker gets a new task within
  milliseconds of its creation. Free slots are leased in one call (``limit``), and
  finished tasks are completed in batches (one call for all completions that are
  ready), so short tasks cost a fraction of a request each. A busy worker's batch
  completion also leases the slots it frees (``complete_and_lease``), so in steady
  state one request per batch both ends and starts tasks; the long poll is for when
  the queue ran dry. ``poll_ms`` is only the back-off after a failed lease request
  (the gateway is down).
- Each running task is heartbeated every third of its lease TTL. The first beat marks
  it running; a task that finishes within :data:`START_BEAT_DELAY_S` never needs one,
  and one that ends with a report and no heartbeat under way is queued for completion
  straight from its job's done callback (no supervising coroutine per task: a no-op
  task costs the worker about a fifth less CPU).
  A heartbeat that reports a cancel kills the agent (cancelling the run cancels the
  engine's stream, which kills its process group) and the task is not completed; a
  heartbeat refused with a lease conflict (409: the lease expired and someone else
  holds the task) does the same: no task is ever completed by a worker that lost it.
- :meth:`Worker.request_stop` (SIGTERM/SIGINT) stops leasing, gives running tasks the
  shutdown grace to finish, then kills them and releases their leases without charging
  an attempt, so another worker takes them over at once.
- The worker says when it starts and when it stops (``start_worker``/``stop_worker``).
  A long poll it cancels while stopping may still have been answered with a lease it
  never read; the stop, which lists the leases it does hold, makes the queue give back
  every other lease under its name (no attempt charged) and refuse it new ones, so no
  task waits out the TTL of a lease nobody works on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable

from loops import errors
from loops.queue.tasks import LeasedTask
from loops.worker.client import Completion, CompletionAnswer, QueueClient
from loops.worker.options import WorkerOptions
from loops.worker.runner import TaskReport, TaskRun, marker_text

log = logging.getLogger(__name__)

#: a task that finishes this soon is completed without a start heartbeat
START_BEAT_DELAY_S = 0.05
#: with few slots free and tasks running, wait this long for more to free up, so one
#: lease request fills many slots (irrelevant next to a real agent turn)
GATHER_SLOTS_MS = 2
#: tries of a batch completion while the queue is unreachable (the leases still hold)
COMPLETE_TRIES = 5

Handler = Callable[[LeasedTask], Awaitable[TaskReport]]


@dataclasses.dataclass(slots=True)
class WorkerStats:
    """What a worker did (returned by :meth:`Worker.run`)."""

    leased: int = 0
    completed: int = 0
    cancelled: int = 0
    lost: int = 0
    released: int = 0
    failed_completions: int = 0


@dataclasses.dataclass(slots=True)
class _Running:
    leased: LeasedTask
    job: asyncio.Task[TaskReport]
    stop_reason: str | None = None
    #: starts the heartbeats after START_BEAT_DELAY_S
    timer: asyncio.TimerHandle | None = None
    #: the heartbeat loop, once started
    beats: asyncio.Task[None] | None = None


class Worker:
    """Leases tasks from a queue client and runs them (see the module docstring).

    Args:
        client: the queue (gateway or in-process).
        options: name, concurrency, TTL, grace, engine.
        handler: runs one leased task and returns how it ended; the default runs it
            as a prompt task (or loop file) with :class:`~loops.worker.runner.TaskRun`.
    """

    def __init__(
        self,
        client: QueueClient,
        options: WorkerOptions,
        *,
        handler: Handler | None = None,
    ) -> None:
        self.client = client
        self.options = options
        self.handler = handler or self._run_task
        self.stats = WorkerStats()
        self._running: dict[int, _Running] = {}
        self._stopping = asyncio.Event()
        self._slot_free = asyncio.Event()
        #: completions to send, each with what to call once it is answered
        self._pending: list[tuple[Completion, Callable[[], None]]] = []
        self._completer: asyncio.Task[None] | None = None
        self._completion_ready = asyncio.Event()
        self._supervisors: set[asyncio.Task[None]] = set()
        self._announced = False
        #: slots promised to lease requests in flight (the long poll, a lease-after)
        self._reserved = 0
        #: whether completions lease the slots they free (``run``, not ``run_one``)
        self._lease_after = False
        self._max_tasks: int | None = None

    async def _run_task(self, leased: LeasedTask) -> TaskReport:
        return await TaskRun(leased.task, client=self.client, options=self.options).run()

    # -- public ---------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop leasing and shut down gracefully (safe to call from a signal handler)."""
        self._stopping.set()

    @property
    def running(self) -> int:
        """Tasks running now."""
        return len(self._running)

    async def run(self, *, max_tasks: int | None = None) -> WorkerStats:
        """Lease and run tasks until :meth:`request_stop` (or ``max_tasks`` were leased).

        Returns:
            What the worker did.
        """
        self._completer = asyncio.ensure_future(self._complete_loop())
        self._lease_after, self._max_tasks = True, max_tasks
        await self._announce_start()
        try:
            while not self._stopping.is_set():
                if max_tasks is not None and self.stats.leased >= max_tasks:
                    break
                free = self._free_slots()
                if free <= 0:
                    await self._wait_for(self._slot_free)
                    self._slot_free.clear()
                    continue
                if self._running and free < max(1, self.options.concurrency // 4):
                    # short tasks end in bursts: gather freed slots for one batched lease
                    await self._pause(GATHER_SLOTS_MS)
                    free = self._free_slots()
                if max_tasks is not None:
                    free = min(free, max_tasks - self.stats.leased - self._reserved)
                if free <= 0:  # a lease-after in flight holds the free slots
                    await self._wait_for(self._slot_free)
                    self._slot_free.clear()
                    continue
                leased_now = await self._lease(free)
                for leased in leased_now:
                    self._start(leased)
                if not leased_now and self.options.wait_ms == 0:  # plain polling
                    await self._pause(self.options.poll_ms)
            self._lease_after = False  # from here on, completions lease nothing more
            await self._announce_stop()
            await self._shutdown(drain=max_tasks is not None and not self._stopping.is_set())
        finally:
            self._lease_after = False
            await self._stop_completer()
        return self.stats

    async def run_one(self, leased: LeasedTask) -> TaskReport | None:
        """Run one already leased task to its end (``loop run-job``); ``None`` if it was
        cancelled, lost or released."""
        self._completer = asyncio.ensure_future(self._complete_loop())
        try:
            self.stats.leased += 1
            running = self._start(leased)
            stop = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({running.job, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
            await self._shutdown(drain=not self._stopping.is_set())
            if running.job.cancelled() or running.stop_reason is not None:
                return None
            return running.job.result()
        finally:
            await self._stop_completer()

    # -- leasing --------------------------------------------------------------------

    async def _wait_for(self, event: asyncio.Event) -> None:
        """Wait for ``event`` or a stop request."""
        waiters = {
            asyncio.ensure_future(event.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _pause(self, ms: float) -> None:
        """Sleep ``ms`` unless a stop is requested first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), ms / 1000)

    def _free_slots(self) -> int:
        """Slots neither running a task nor promised to a lease request in flight."""
        return self.options.concurrency - len(self._running) - self._reserved

    async def _lease(self, limit: int) -> list[LeasedTask]:
        self._reserved += limit
        try:
            return await self._lease_reserved(limit)
        finally:
            self._reserved -= limit

    async def _lease_reserved(self, limit: int) -> list[LeasedTask]:
        request = asyncio.ensure_future(
            self.client.lease(
                worker=self.options.name,
                ttl_ms=self.options.lease_ttl_ms,
                wait_ms=self.options.wait_ms,
                limit=limit,
                types=self.options.types,
            )
        )
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({request, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not request.done():
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError, errors.LoopsError):
                await request
            return []
        try:
            leased = request.result()
        except errors.WorkerStopped as exc:
            if not self._announced:  # a stop mark left under this name by an earlier run
                await self._announce_start()
                return []
            log.warning("the queue refuses this worker new leases (%s); stopping", exc)
            self.request_stop()
            return []
        except errors.StoreError as exc:
            log.warning("lease failed (%s); trying again in %d ms", exc, self.options.poll_ms)
            await self._pause(self.options.poll_ms)
            return []
        return await self._accept(leased)

    async def _accept(self, leased: list[LeasedTask]) -> list[LeasedTask]:
        """Count what was leased; give it back at once if the worker is stopping."""
        self.stats.leased += len(leased)
        if self._stopping.is_set():  # leased just as we stopped: give them back at once
            for item in leased:
                await self._release(item, "worker stopping")
            return []
        return leased

    async def _announce_start(self) -> None:
        """Tell the queue this worker starts (clearing a stop mark left under its name)."""
        try:
            await self.client.start_worker(self.options.name)
            self._announced = True
        except errors.LoopsError as exc:  # the gateway is down: leasing retries anyway
            log.warning("could not announce the worker's start (%s)", exc)

    async def _announce_stop(self) -> None:
        """Tell the queue this worker stopped: it gives back any lease under this name
        but those of the running tasks (e.g. one answering a poll just cancelled)."""
        holding = [r.leased.lease.token for r in self._running.values()]
        try:
            released = await self.client.stop_worker(self.options.name, holding=holding)
        except errors.LoopsError as exc:
            log.warning("could not tell the queue this worker stopped (%s)", exc)
            return
        if released:
            log.info("gave back %d lease(s) taken as the worker stopped", len(released))
            self.stats.released += len(released)

    # -- running one task -----------------------------------------------------------

    def _start(self, leased: LeasedTask) -> _Running:
        task = leased.task
        if log.isEnabledFor(logging.INFO):
            title = _title(task.title or task.prompt)
            log.info("task %s: leased (attempt %s) %s", task.id, task.attempts, title)
        job = asyncio.ensure_future(self.handler(leased))
        running = _Running(leased, job)
        self._running[leased.task.id] = running
        # the beats start after a delay from a timer, so a short task costs no
        # heartbeat task at all
        delay_s = min(START_BEAT_DELAY_S, self.options.heartbeat_interval_s)
        running.timer = asyncio.get_running_loop().call_later(delay_s, self._begin_beats, running)
        job.add_done_callback(functools.partial(self._job_done, running))
        return running

    def _begin_beats(self, running: _Running) -> None:
        if not running.job.done():
            running.beats = asyncio.ensure_future(self._heartbeat(running))

    def _job_done(self, running: _Running, job: asyncio.Task[TaskReport]) -> None:
        """A task's job ended: queue its completion at once when it ended plainly (a
        report, no heartbeat under way, not stopped); else settle it in a coroutine."""
        if running.timer is not None:
            running.timer.cancel()
        plain = running.beats is None and running.stop_reason is None and not job.cancelled()
        if plain and job.exception() is None:
            with contextlib.suppress(Exception):  # a bad report: settled (and logged) below
                completion = self._completion(running.leased, job.result())
                self._pending.append((completion, functools.partial(self._answered, running)))
                self._completion_ready.set()
                return
        supervisor = asyncio.ensure_future(self._settle(running))
        self._supervisors.add(supervisor)
        supervisor.add_done_callback(self._supervisors.discard)

    def _answered(self, running: _Running) -> None:
        """The task's completion was answered (or given up on): its slot is free."""
        self._running.pop(running.leased.task.id, None)
        self._slot_free.set()

    async def _settle(self, running: _Running) -> None:
        """End a task that did not end plainly: stop its heartbeats, turn a runner error
        into a retry, then complete it (or not, when it was stopped) or release it."""
        try:
            report: TaskReport | None = await running.job  # done already
        except asyncio.CancelledError:
            report = None
        except Exception as exc:  # the worker boundary: a handler bug must not kill the worker
            log.exception("task %s: the runner raised", running.leased.task.id)
            report = TaskReport("retry", error=f"the worker's runner raised {exc!r}")
        finally:
            if running.beats is not None:
                running.beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running.beats
        try:
            await self._finish(running, report)
        finally:
            self._answered(running)

    async def _finish(self, running: _Running, report: TaskReport | None) -> None:
        task = running.leased.task
        if running.stop_reason == "shutdown":
            await self._release(running.leased, "worker shut down before the task finished")
            return
        if running.stop_reason is not None or report is None:
            log.warning("task %s: not completed (%s)", task.id, running.stop_reason)
            return
        await self._submit(self._completion(running.leased, report))

    def _completion(self, leased: LeasedTask, report: TaskReport) -> Completion:
        task = leased.task
        if log.isEnabledFor(logging.INFO):
            summary = _title(report.result or report.error or "")
            log.info("task %s: %s: %s", task.id, report.status, summary)
        return Completion(
            task_id=task.id,
            lease_token=leased.lease.token,
            status=report.status,
            result=report.result,
            error=report.error,
            output=marker_text(report.output),  # the full text is an artifact
            usage=report.usage,
            waiting_on=report.waiting_on,
        )

    async def _heartbeat(self, running: _Running) -> None:
        task_id = running.leased.task.id
        token = running.leased.lease.token
        interval = self.options.heartbeat_interval_s
        delay = 0.0  # started by the timer in _supervise: the first beat goes at once
        start = True
        while True:
            await asyncio.sleep(delay)
            delay = interval
            try:
                answer = await self.client.heartbeat(
                    task_id, lease_token=token, ttl_ms=self.options.lease_ttl_ms, start=start
                )
            except errors.LeaseError as exc:
                self._stop(running, "lease lost", f"lease lost ({exc}); stopping the agent")
                self.stats.lost += 1
                return
            except errors.StoreError as exc:  # the gateway is down: the lease may still hold
                log.warning("task %s: heartbeat failed (%s); retrying", task_id, exc)
                continue
            start = False
            if answer.cancel_requested:
                self._stop(running, "cancelled", "cancelled; stopping the agent")
                self.stats.cancelled += 1
                return

    def _stop(self, running: _Running, reason: str, message: str) -> None:
        log.warning("task %s: %s", running.leased.task.id, message)
        running.stop_reason = reason
        running.job.cancel()

    async def _release(self, leased: LeasedTask, reason: str) -> None:
        try:
            await self.client.release(leased.task.id, lease_token=leased.lease.token, reason=reason)
            self.stats.released += 1
        except errors.LoopsError as exc:
            log.warning("task %s: lease not released (%s); it expires by TTL", leased.task.id, exc)

    # -- completing in batches ------------------------------------------------------

    async def _submit(self, completion: Completion) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def answered() -> None:
            if not done.done():
                done.set_result(None)

        self._pending.append((completion, answered))
        self._completion_ready.set()
        await done

    async def _complete_loop(self) -> None:
        while True:
            await self._completion_ready.wait()
            self._completion_ready.clear()
            while self._pending:
                batch, self._pending = self._pending[:1000], self._pending[1000:]
                await self._complete_batch(batch)

    def _lease_after_limit(self, finishing: int) -> int:
        """How many tasks a completion of ``finishing`` tasks may lease (0: none)."""
        if not self._lease_after or self._stopping.is_set():
            return 0
        free = self._free_slots() + finishing  # the finishing tasks still hold their slots
        if self._max_tasks is not None:
            free = min(free, self._max_tasks - self.stats.leased - self._reserved)
        return max(0, free)

    async def _complete_and_lease(self, completions: list[Completion]) -> list[CompletionAnswer]:
        """Complete a batch, leasing the slots it frees in the same call when allowed."""
        limit = self._lease_after_limit(len(completions))
        if limit <= 0:
            return await self.client.complete_many(completions)
        self._reserved += limit
        try:
            answers, leased = await self.client.complete_and_lease(
                completions,
                worker=self.options.name,
                ttl_ms=self.options.lease_ttl_ms,
                limit=limit,
                types=self.options.types,
            )
        finally:
            self._reserved -= limit
        for item in await self._accept(leased):
            self._start(item)
        return answers

    async def _complete_batch(self, batch: list[tuple[Completion, Callable[[], None]]]) -> None:
        """Complete a batch; while the worker leases, the same call leases as many tasks
        as the batch frees slots (one round trip, one transaction on PostgreSQL)."""
        answers: list[CompletionAnswer] = []
        for attempt in range(1, COMPLETE_TRIES + 1):
            try:
                answers = await self._complete_and_lease([c for c, _ in batch])
                break
            except errors.StoreUnavailable as exc:  # the gateway restarts: the leases hold
                log.warning("completing %d task(s) failed (%s); try %d", len(batch), exc, attempt)
                await asyncio.sleep(self.options.poll_ms / 1000)
            except errors.LoopsError as exc:
                log.warning("completing %d task(s) failed: %s", len(batch), exc)
                break
        if not answers:
            self.stats.failed_completions += len(batch)
        for index, (completion, answered) in enumerate(batch):
            if index < len(answers):
                answer = answers[index]
                if answer.ok:
                    self.stats.completed += 1
                else:
                    self.stats.failed_completions += 1
                    log.warning("task %s: completion refused: %s", completion.task_id, answer.error)
            answered()

    async def _stop_completer(self) -> None:
        if self._completer is None:
            return
        while self._pending:
            await asyncio.sleep(0.001)
        self._completer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._completer
        self._completer = None

    # -- shutting down --------------------------------------------------------------

    async def _shutdown(self, *, drain: bool) -> None:
        """Let running tasks finish (forever when ``drain``, else within the grace),
        then kill the rest and release their leases."""
        jobs = [r.job for r in self._running.values()]
        if jobs and not drain:
            log.info(
                "stopping: %d task(s) running, waiting up to %d ms",
                len(jobs),
                self.options.shutdown_grace_ms,
            )
            await asyncio.wait(jobs, timeout=self.options.shutdown_grace_ms / 1000)
        elif jobs:
            await asyncio.wait(jobs)
        for running in list(self._running.values()):
            if not running.job.done():
                running.stop_reason = running.stop_reason or "shutdown"
                running.job.cancel()
        while self._supervisors:
            await asyncio.gather(*list(self._supervisors), return_exceptions=True)
        while self._running:  # completions queued from done callbacks, not yet answered
            self._slot_free.clear()
            await self._slot_free.wait()


def _title(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
