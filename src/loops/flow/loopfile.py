"""Loop files: import a ``*.loop.py`` by path and find its root job.

The root job is the one passed to :func:`define_job`, else the module's ``job``
variable. Skills and agents defined in the file are checked once it is imported
(a skill named in ``requires_skills``/``uses_skills`` must be defined). Importing
runs the file's top level, which only constructs jobs: no engine is built and no
model is called until the job runs. Every failure is a
:class:`~loops.errors.LoopFileError` naming the file and line.
"""

from __future__ import annotations

import contextvars
import dataclasses
import importlib.util
import sys
import traceback
import uuid
from pathlib import Path

from loops import errors
from loops.flow import agents, paths
from loops.flow.jobs import Job

#: the suffix a loop file must have
SUFFIX = ".loop.py"

_DEFINED: contextvars.ContextVar[list[Job] | None] = contextvars.ContextVar(
    "loops_defined_jobs", default=None
)


def define_job(job: Job) -> Job:
    """Mark ``job`` as the loop file's root job (instead of a ``job`` variable); returns it.

    Raises:
        ConstructionError: ``job`` is not a job.
    """
    if not isinstance(job, Job):
        raise errors.ConstructionError(
            f"define_job() takes a job (loop(...), dag(...), agent_job(...)...), got {job!r}"
        )
    defined = _DEFINED.get()
    if defined is not None:
        defined.append(job)
    return job


@dataclasses.dataclass(frozen=True, slots=True)
class LoopFile:
    """A loaded loop file: its absolute path and root job."""

    path: Path
    job: Job


def is_loop_file_name(text: str) -> bool:
    """Whether ``text`` names a loop file (ends in ``.loop.py``)."""
    return text.endswith(SUFFIX)


def _where(path: Path, exc: BaseException) -> str:
    """``file:line`` of the deepest frame inside the loop file, or just the file."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return f"{path}:{line}" if line else str(path)


def load(path: str | Path) -> LoopFile:
    """Import the loop file at ``path`` and return its root job.

    Relative paths used while it is imported resolve against its folder, and its
    folder is importable for the duration (so helper modules beside it work).

    Raises:
        LoopFileError: the file is missing or misnamed, has a syntax or import error,
            fails while constructing (with the file and line), or defines no job.
    """
    file = Path(path).expanduser().resolve()
    if not file.name.endswith(SUFFIX):
        raise errors.LoopFileError(f"{path} is not a loop file: its name must end in {SUFFIX}")
    if not file.is_file():
        raise errors.LoopFileError(f"no such loop file: {path}")
    module_name = f"_loops_file_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise errors.LoopFileError(f"{file}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    defined: list[Job] = []
    token = _DEFINED.set(defined)
    sys.path.insert(0, str(file.parent))
    try:
        with paths.loading(file.parent), agents.collecting() as found:
            spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise errors.LoopFileError(f"{file}:{exc.lineno}: syntax error: {exc.msg}") from None
    except errors.LoopsError as exc:
        raise errors.LoopFileError(f"{_where(file, exc)}: {exc.message}") from None
    except ImportError as exc:
        raise errors.LoopFileError(f"{_where(file, exc)}: import failed: {exc}") from None
    except Exception as exc:  # the file's own code failed: report where, not a traceback
        raise errors.LoopFileError(f"{_where(file, exc)}: {type(exc).__name__}: {exc}") from None
    finally:
        _DEFINED.reset(token)
        if sys.path and sys.path[0] == str(file.parent):
            sys.path.pop(0)
    problems = agents.unknown_skills(found)
    if problems:
        raise errors.LoopFileError(f"{file}: {problems[0]}")
    return LoopFile(file, _root_job(file, module.__dict__.get("job"), defined))


def _root_job(file: Path, variable: object, defined: list[Job]) -> Job:
    if len(defined) > 1:
        names = ", ".join(j.name for j in defined)
        raise errors.LoopFileError(
            f"{file}: define_job() was called {len(defined)} times ({names}); call it once"
        )
    if defined:
        return defined[0]
    if variable is None:
        raise errors.LoopFileError(
            f"{file} defines no job: assign the root job to a variable named `job`, "
            "or pass it to define_job(...)"
        )
    if not isinstance(variable, Job):
        raise errors.LoopFileError(
            f"{file}: `job` is a {type(variable).__name__}, not a job; assign loop(...), dag(...) "
            "or another job to it"
        )
    return variable
