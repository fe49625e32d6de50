"""Request and response bodies of the REST API, as pydantic models.

Requests are parsed with these models (unknown fields are refused, so a typo is a 422
naming the field); the service then applies the queue's own rules. Responses are built
by the domain objects' ``to_dict`` and declared here so that ``/openapi.json`` describes
exactly what clients receive.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from loops.services import queue as queue_service

TaskStatusName = Literal[
    "queued",
    "leased",
    "running",
    "waiting_children",
    "waiting_approval",
    "done",
    "failed",
    "blocked",
    "cancelled",
]
CompletionStatusName = Literal[
    "done", "failed", "blocked", "retry", "waiting_approval", "waiting_children"
]
ArtifactKindName = Literal["transcript", "final_message", "diff", "log", "file"]
#: how the hot worker routes answer: full task objects, or only what a worker needs
AnswerFormName = Literal["full", "lean"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- shared pieces --------------------------------------------------------------------


class UsageBody(_Request):
    """Tokens and cost of an attempt (added to the task's total)."""

    input_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)
    cached_input_tokens: int = Field(0, ge=0)
    cost_usd: float | None = Field(None, ge=0)


class UsageOut(_Response):
    """Tokens and cost summed over a task's iterations."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: float | None


class ErrorDetail(_Response):
    """What went wrong and what to fix."""

    code: str = Field(description="short snake_case code, e.g. not_found, lease_conflict")
    message: str


class ErrorOut(_Response):
    """Every error answer."""

    error: ErrorDetail


# -- tasks ----------------------------------------------------------------------------


class TaskCreate(_Request):
    """A task to create (``POST /tasks`` and ``POST /tasks/{id}/children``)."""

    prompt: str = Field(min_length=1, description="what the agent should do")
    type: str | None = Field(None, max_length=100)
    title: str | None = Field(None, max_length=500)
    priority: int | None = Field(None, ge=1, le=5, description="1 = most urgent; default 3")
    success: str | None = Field(None, description="success criteria for a judge")
    check: str | None = Field(None, description="deterministic check command")
    provider: str | None = Field(None, max_length=100)
    model: str | None = Field(None, max_length=200)
    cwd: str | None = Field(None, max_length=4096)
    max_iterations: int | None = Field(None, ge=1)
    min_tests: int | None = Field(None, ge=0)
    max_attempts: int | None = Field(None, ge=1)
    idempotency_key: str | None = Field(None, max_length=500)


class _TaskDefinition(_Response):
    """What a task asks, id to priority: the fields every form of a task shares."""

    id: int
    type: str
    title: str
    prompt: str
    success: str | None
    check: str | None
    provider: str | None
    model: str | None
    cwd: str | None
    max_iterations: int | None
    min_tests: int | None
    priority: int


class TaskOut(_TaskDefinition):
    """A task (DESIGN section 3); times are ISO 8601 UTC."""

    status: TaskStatusName
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: str | None
    run_after: str
    parent_id: int | None
    depth: int
    idempotency_key: str | None
    responsibility: str | None
    result: str | None
    error: str | None
    usage: UsageOut
    created_at: str
    updated_at: str
    finished_at: str | None
    wake_each: bool = Field(
        description="it completed waiting_children: queued again as each child finishes"
    )


class TaskDetailOut(TaskOut):
    """A task with how many steps, children and artifacts it has."""

    steps_count: int
    children_count: int
    artifacts_count: int


class TaskList(_Response):
    """Tasks, newest first."""

    tasks: list[TaskOut]


class ChildrenList(_Response):
    """A task's children, newest first."""

    children: list[TaskOut]


class CancelRequest(_Request):
    """Why a task is cancelled (optional)."""

    reason: str | None = Field(None, max_length=2000)


class RequeueRequest(_Request):
    """Why a failed or blocked task goes back to the queue (optional)."""

    reason: str | None = Field(None, max_length=2000)


class ApprovalRequest(_Request):
    """An answer to a human gate of a task's run."""

    path: str = Field(..., min_length=1, max_length=1000)
    approved: bool
    reason: str | None = Field(None, max_length=2000)
    by: str | None = Field(None, max_length=200)


class GateOut(_Response):
    """A human gate the task's run asked, with its answer once given."""

    path: str
    question: str
    answer: dict[str, Any] | None


class GateList(_Response):
    """The human gates of a task's run."""

    gates: list[GateOut]


# -- leases ---------------------------------------------------------------------------


class ReleaseRequest(_Request):
    """Give a lease back unfinished (``POST /tasks/{id}/release``): no attempt charged."""

    lease_token: str = Field(min_length=1)
    reason: str | None = Field(None, max_length=2000)


class WorkerStopRequest(_Request):
    """A worker stopped (``POST /workers/{name}/stop``): what it still holds."""

    holding: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="lease tokens the worker still holds (its running tasks); every "
        "other lease under its name is given back",
    )


class WorkerStopOut(_Response):
    """The answer to a worker's stop: the tasks given back to the queue."""

    worker: str
    released: list[int]


class LeaseRequest(_Request):
    """Lease the next ready task(s) (``POST /tasks/lease``)."""

    worker: str = Field(
        min_length=1, max_length=200, pattern=r"\S", description="the worker's name"
    )
    ttl_ms: int | None = Field(
        None,
        ge=queue_service.MIN_TTL_MS,
        le=queue_service.MAX_TTL_MS,
        description="lease length; default QUEUE_LEASE_TTL_MS",
    )
    wait_ms: int = Field(
        0,
        ge=0,
        le=queue_service.MAX_WAIT_MS,
        description="long polling: wait up to this long for work before answering 204",
    )
    limit: int = Field(
        1,
        ge=1,
        le=queue_service.MAX_BATCH,
        description='batch: with limit > 1 the answer is {"leases": [...]}',
    )
    types: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, description="lease only tasks of these types (omit for any)"
    )
    form: AnswerFormName = Field(
        "full",
        description='"lean": the answer is {"leases": [LeanLeaseOut, ...]} whatever the limit',
    )


class LeaseTaskRequest(_Request):
    """Lease one given task (``POST /tasks/{id}/lease``)."""

    worker: str = Field(min_length=1, max_length=200)
    ttl_ms: int | None = Field(None, ge=queue_service.MIN_TTL_MS, le=queue_service.MAX_TTL_MS)


class LeaseOut(_Response):
    """A lease: heartbeat and complete must present its token."""

    token: str
    owner: str
    expires_at: str
    attempt: int


class LeasedTaskOut(_Response):
    """A task with the lease just granted on it."""

    task: TaskOut
    lease: LeaseOut


class LeaseBatchOut(_Response):
    """The leases granted by a batch lease (``limit`` > 1)."""

    leases: list[LeasedTaskOut]


class LeanLeaseOut(_TaskDefinition):
    """A lease in the lean form: what a worker needs to run the task, in one object.

    The task is ``leased`` by the caller; its status, owner, result, usage and other
    bookkeeping are left out (``GET /tasks/{id}`` has them).
    """

    attempts: int = Field(description="leases taken so far, this one included")
    max_attempts: int
    parent_id: int | None
    depth: int
    created_at: str
    token: str = Field(description="the lease token: heartbeat and complete present it")
    expires_at: str


class LeanLeaseBatchOut(_Response):
    """The leases granted by a lease with ``"form": "lean"`` (any ``limit``)."""

    leases: list[LeanLeaseOut]


class HeartbeatRequest(_Request):
    """Extend a lease; ``status: "running"`` also marks the task started."""

    lease_token: str = Field(min_length=1)
    ttl_ms: int | None = Field(None, ge=queue_service.MIN_TTL_MS, le=queue_service.MAX_TTL_MS)
    status: Literal["running"] | None = None


class HeartbeatOut(_Response):
    """The task, its extended lease, and whether it was cancelled."""

    task: TaskOut
    lease: LeaseOut
    cancel_requested: bool


class CompleteRequest(_Request):
    """End a lease (``POST /tasks/{id}/complete``)."""

    lease_token: str = Field(min_length=1)
    status: CompletionStatusName
    result: str | None = None
    error: str | None = None
    output: str | None = Field(None, description="agent output, scanned for STEP markers")
    usage: UsageBody | None = None
    waiting_on: list[int] | None = Field(
        None,
        max_length=10_000,
        description="with waiting_children: the child ids the turn saw active; if one "
        "finished since, the task is queued again at once",
    )


class CompletionItem(CompleteRequest):
    """One completion of a batch."""

    id: int = Field(ge=1, description="the task id")


class LeaseAfterRequest(_Request):
    """The next batch to lease right after completing (no waiting)."""

    worker: str = Field(min_length=1, max_length=200)
    ttl_ms: int | None = Field(None, ge=queue_service.MIN_TTL_MS)
    limit: int = Field(1, ge=1, le=queue_service.MAX_BATCH)
    types: list[str] | None = None


class CompleteBatchRequest(_Request):
    """Many completions at once (``POST /tasks/complete``), optionally leasing the next."""

    completions: list[CompletionItem] = Field(max_length=queue_service.MAX_BATCH)
    lease: LeaseAfterRequest | None = Field(
        None, description='lease the next batch in the same call; the answer adds "leases"'
    )
    form: AnswerFormName = Field(
        "full",
        description='"lean": results carry no task object and leases are LeanLeaseOut',
    )


class CompletionResultOut(_Response):
    """One item's answer: the task (not in the lean form), or the error it met (nothing
    changed for it)."""

    id: int
    ok: bool
    task: TaskOut | None = None
    error: ErrorDetail | None = None


class CompleteBatchOut(_Response):
    """One result per completion, in order (and the next leases, when asked for)."""

    results: list[CompletionResultOut]
    leases: list[LeasedTaskOut] | list[LeanLeaseOut] | None = None


# -- events, steps, artifacts, responsibilities, tick -----------------------------------


class EventOut(_Response):
    """One event of the timeline; ids are increasing integers."""

    id: int
    ts: str
    type: str
    task_id: int | None
    data: dict[str, Any]


class EventList(_Response):
    """Events in id order."""

    events: list[EventOut]


class EventIn(_Request):
    """One event a worker reports about its task (e.g. a run event)."""

    type: str = Field(min_length=1, max_length=100)
    data: dict[str, Any] = Field(default_factory=dict)


class EventBatchIn(_Request):
    """Events a worker reports about its task, in order."""

    events: list[EventIn] = Field(max_length=queue_service.MAX_EVENT_BATCH)


class AppendedOut(_Response):
    """How many events were appended."""

    appended: int


class StepOut(_Response):
    """One recorded STEP (unique per task and idempotency key)."""

    task_id: int
    name: str
    status: Literal["DONE", "FAILED"]
    idempotency_key: str
    note: str
    created_at: str
    updated_at: str


class StepList(_Response):
    """A task's steps in the order first recorded."""

    steps: list[StepOut]


class OutputIn(_Request):
    """Agent output to scan for STEP markers."""

    output: str


class ArtifactOut(_Response):
    """One stored artifact (its content at ``/artifacts/{id}/content``)."""

    id: int
    task_id: int
    name: str
    kind: ArtifactKindName
    size: int
    sha256: str
    path: str
    created_at: str


class ArtifactList(_Response):
    """Artifacts, newest first."""

    artifacts: list[ArtifactOut]


class StateIn(_Request):
    """A JSON checkpoint value."""

    value: Any


class StateOut(_Response):
    """A stored checkpoint value (``null`` when none)."""

    key: str
    value: Any


class ResponsibilityOut(_Response):
    """A recurring responsibility and its dispatch bookkeeping."""

    name: str
    schedule: str
    template: dict[str, Any]
    enabled: bool
    last_dispatched_at: str | None
    next_due_at: str
    last_task_id: int | None


class ResponsibilityList(_Response):
    """Responsibilities by name."""

    responsibilities: list[ResponsibilityOut]


class DispatchOut(_Response):
    """A task a responsibility dispatched."""

    responsibility: str
    task: TaskOut


class TickOut(_Response):
    """What a tick did."""

    reclaimed: int
    dispatched: list[DispatchOut]


class HealthOut(_Response):
    """The gateway is up and its store answers."""

    status: Literal["ok"]
    store: str


# -- dashboard ------------------------------------------------------------------------


class HeldLeaseOut(_Response):
    """A lease held by a worker."""

    task_id: int
    title: str
    status: str
    attempt: int
    since: str | None = Field(description="when the lease was taken")
    last_heartbeat: str | None
    expires_at: str | None


class WorkerOut(_Response):
    """A worker (a lease owner) and its leases."""

    name: str
    last_heartbeat: str | None
    leases: list[HeldLeaseOut]


class WorkerList(_Response):
    """Workers holding leases, by name."""

    workers: list[WorkerOut]


class RunOut(_Response):
    """A registered run (``loop list --json``)."""

    run_id: str
    state: str
    title: str
    started_at: str
    tokens: int
    cost_usd: float


class RunList(_Response):
    """Registered runs, newest first."""

    runs: list[RunOut]
