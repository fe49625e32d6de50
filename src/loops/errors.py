"""The exception tree of loops: one root, families grouped by who has to act.

::

    LoopsError                      root of everything loops raises on purpose
    ├── ConfigError                 a setting, flag or loops.toml entry is wrong (the operator acts)
    │   ├── ReplayDiverged          a replayed run asked for a turn its recording does not have
    │   └── SandboxUnavailable      the requested sandbox (bwrap) cannot start here
    ├── InputError                  a request, CLI argument or loop file is wrong (the caller acts)
    │   ├── TaskNotFound            no task has that id
    │   ├── RunNotFound             no supervised run has that id
    │   ├── InvalidTransition       the task's status does not allow the operation
    │   ├── LimitExceeded           child depth or children-per-task limit reached
    │   ├── PayloadTooLarge         a body or field over its size limit
    │   ├── LoopFileError           a loop file cannot be imported or constructed
    │   └── ConstructionError       a loop, dag, job or condition was built with bad arguments
    ├── StoreError                  the database failed (the operator acts)
    │   ├── StoreUnavailable        cannot connect, or the connection was lost
    │   │   └── GatewayUnavailable  the gateway (the queue over HTTP) cannot be reached
    │   ├── StoreLocked             the database stayed locked past the busy timeout
    │   ├── StoreFull               the disk or quota is full
    │   ├── StoreReadOnly           the database file or server is read-only
    │   └── MigrationRequired       the schema is behind: run `loop db:migrate`
    ├── LeaseError                  a lease was lost or is stale (the worker acts: stop work)
    │   ├── LeaseConflict           the token presented is not the current lease's
    │   └── WorkerStopped           the worker said it stopped: no new lease for that name
    ├── EngineError                 an agent engine failed (classified for the caller)
    │   ├── EngineNotFound          the agent's executable is not installed
    │   ├── EngineAuthError         not logged in / key rejected
    │   ├── EngineRateLimited       rate or usage limit; carries retry_after_s
    │   ├── EngineNetworkError      the model API is unreachable
    │   ├── EnginePermissionDenied  the agent was refused a tool or a path
    │   ├── EngineMaxTurns          the agent hit its turn limit
    │   ├── EngineApiError          the model API refused the request (bad model, 5xx, ...)
    │   ├── EngineSessionNotFound   the session to resume does not exist on this machine/cwd
    │   ├── EngineCrashed           the agent exited without a terminal event
    │   └── EngineTimeout           the agent ran past its wall-clock limit
    └── GitError                    git failed or refused (the operator acts on the repository)
        ├── GitNotFound             the git executable is not installed
        ├── NotARepository          the directory is not inside a git repository
        ├── RepositoryStateError    the repository is mid-rebase/merge or on a detached HEAD
        ├── GitIdentityMissing      git has no user.name / user.email to commit with
        ├── MergeConflict           landing a node's work conflicts; carries the files
        └── GitCommandFailed        a git command exited non-zero; carries argv and stderr

A class's docstring is its default message; the raise site adds the bad value and the
fix. Control flow (retry, pause, kickback) is not failure and lives elsewhere.
"""

from __future__ import annotations


class LoopsError(Exception):
    """Something went wrong in loops."""

    #: short snake_case code used by the gateway's error bodies
    code: str = "error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or self.__class__.__name__).strip())

    @property
    def message(self) -> str:
        """The human message, as given at the raise site or the class default."""
        return str(self.args[0]) if self.args else ""


class ConfigError(LoopsError):
    """A setting is invalid."""

    code = "config_error"


class SandboxUnavailable(ConfigError):
    """The requested sandbox cannot start here (never a silent run without one)."""

    code = "sandbox_unavailable"


class ReplayDiverged(ConfigError):
    """The run asked for a turn the recording does not have (record again, or replay by order)."""

    code = "replay_diverged"


class InputError(LoopsError):
    """The input is invalid."""

    code = "invalid_input"


class TaskNotFound(InputError):
    """No task has that id."""

    code = "not_found"


class RunNotFound(InputError):
    """No supervised run has that id."""

    code = "not_found"


class NotFound(InputError):
    """The thing asked for does not exist."""

    code = "not_found"


class InvalidTransition(InputError):
    """The task's current status does not allow this operation."""

    code = "invalid_transition"


class LimitExceeded(InputError):
    """A queue limit was reached."""

    code = "limit_exceeded"


class PayloadTooLarge(InputError):
    """The payload is larger than allowed."""

    code = "payload_too_large"


class LoopFileError(InputError):
    """The loop file cannot be loaded."""

    code = "invalid_loop_file"


class ConstructionError(InputError):
    """A loop, dag, job or condition was built with invalid arguments."""

    code = "invalid_construction"


class StoreError(LoopsError):
    """The database failed."""

    code = "store_error"


class StoreUnavailable(StoreError):
    """The database is unreachable."""

    code = "store_unavailable"


class GatewayUnavailable(StoreUnavailable):
    """The gateway cannot be reached: start it with `loop gateway` or fix WORKER_API_BASE_URL."""

    code = "gateway_unavailable"


class StoreLocked(StoreError):
    """The database stayed locked by another process past the busy timeout."""

    code = "store_locked"


class StoreFull(StoreError):
    """The disk holding the database is full."""

    code = "store_full"


class StoreReadOnly(StoreError):
    """The database is read-only."""

    code = "store_read_only"


class MigrationRequired(StoreError):
    """The database schema is behind this version of loops: run `loop db:migrate`."""

    code = "migration_required"


class LeaseError(LoopsError):
    """The lease is no longer held."""

    code = "lease_error"


class LeaseConflict(LeaseError):
    """The lease token is not the task's current lease (it expired or was never valid)."""

    code = "lease_conflict"


class WorkerStopped(LeaseError):
    """The worker told the queue it stopped; no lease is granted under its name."""

    code = "worker_stopped"


class EngineError(LoopsError):
    """The agent engine failed."""

    code = "engine_error"


class EngineNotFound(EngineError):
    """The agent's executable is not installed."""

    code = "engine_not_found"


class EngineAuthError(EngineError):
    """The agent is not logged in or its API key was rejected."""

    code = "engine_auth"


class EngineRateLimited(EngineError):
    """The agent hit a rate or usage limit."""

    code = "engine_rate_limited"

    def __init__(self, message: str | None = None, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineNetworkError(EngineError):
    """The agent cannot reach its model API."""

    code = "engine_network"


class EnginePermissionDenied(EngineError):
    """The agent was denied a tool or a path it needed."""

    code = "engine_permission_denied"


class EngineMaxTurns(EngineError):
    """The agent reached its maximum number of turns."""

    code = "engine_max_turns"


class EngineApiError(EngineError):
    """The model API answered with an error the agent could not recover from."""

    code = "engine_api_error"


class EngineSessionNotFound(EngineError):
    """The session to resume does not exist here (sessions are per machine and per cwd)."""

    code = "engine_session_not_found"


class EngineCrashed(EngineError):
    """The agent process ended without a final result."""

    code = "engine_crashed"


class EngineTimeout(EngineError):
    """The agent ran past its wall-clock limit and was killed."""

    code = "engine_timeout"


class EngineBudgetExceeded(EngineError):
    """The engine's USD budget is spent; no further turn is started."""

    code = "engine_budget_exceeded"


class GitError(LoopsError):
    """git failed or refused the operation."""

    code = "git_error"


class GitNotFound(GitError):
    """The git executable is not installed or not on PATH: install git (2.38 or newer)."""

    code = "git_not_found"


class NotARepository(GitError):
    """The directory is not inside a git repository: run `git init` or pass a repository."""

    code = "not_a_repository"


class RepositoryStateError(GitError):
    """The repository is in a state git refuses for this operation."""

    code = "repository_state"


class GitIdentityMissing(GitError):
    """git has no identity to commit with: set `git config user.name` and `user.email`."""

    code = "git_identity_missing"


class MergeConflict(GitError):
    """Landing the work conflicts with the target branch."""

    code = "merge_conflict"

    def __init__(self, message: str | None = None, *, files: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.files = files


class GitCommandFailed(GitError):
    """A git command exited with an error."""

    code = "git_command_failed"

    def __init__(
        self,
        message: str | None = None,
        *,
        argv: tuple[str, ...] = (),
        returncode: int = 1,
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
