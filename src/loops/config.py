"""Settings: the only module that reads ``os.environ``.

Values flow one way: defaults (written once, in :data:`FIELDS`) -> ``loops.toml`` (the
current directory's, or the file named by ``LOOPS_CONFIG``) -> environment variables ->
CLI flags -> one frozen :class:`Settings` with small frozen groups.

``loops.toml``::

    [queue]
    db_path = "data/queue.sqlite"     # relative paths resolve against the file's folder
    max_attempts = 5

    [openai]                          # the `openai` engine (any OpenAI-compatible API)
    base_url = "http://127.0.0.1:11434/v1"
    model = "qwen2.5-coder"           # api_key: better in OPENAI_API_KEY than in a file

    [[responsibilities]]
    name = "triage"
    every = "15m"                     # or: cron = "0 * * * *"
    prompt = "Check outstanding tasks and progress one"
    type = "maintenance"              # optional, like title, priority, success, check, provider
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loops import errors

if TYPE_CHECKING:  # imported where used: croniter is slow to import for every command
    from loops.notifications import NotifyTarget
    from loops.queue.responsibilities import ResponsibilityDef

#: environment variable naming the config file
CONFIG_ENV = "LOOPS_CONFIG"
#: config file looked for in the current directory
CONFIG_FILENAME = "loops.toml"


@dataclasses.dataclass(frozen=True, slots=True)
class QueueSettings:
    """The queue: where it is stored and its limits."""

    db_path: Path
    db_url: str | None
    db_pool_size: int
    sqlite_sync: str
    lease_ttl_ms: int
    max_attempts: int
    max_child_depth: int
    max_children_per_task: int
    retry_base_ms: int
    retry_cap_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class ApiSettings:
    """The gateway's HTTP server."""

    host: str
    port: int
    token: str | None = dataclasses.field(repr=False)
    max_body_bytes: int
    #: the gateway ticks by itself at least this often (0: never; ``loop tick`` only)
    tick_interval_ms: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSettings:
    """A worker's connection to the gateway and its timings."""

    api_base_url: str
    poll_ms: int
    lease_ttl_ms: int
    shutdown_grace_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class OpenAISettings:
    """The ``openai`` engine's endpoint: any OpenAI-compatible chat-completions API."""

    base_url: str
    api_key: str | None = dataclasses.field(repr=False)
    model: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of loops, resolved.

    Attributes:
        queue: the queue's storage and limits.
        api: the gateway's server.
        worker: the worker's timings.
        openai: the ``openai`` engine's endpoint, key and default model.
        home: the run registry's root (``LOOPS_HOME``, default ``~/.loops``).
        config_path: the loops.toml read, if any.
        responsibilities: responsibilities defined in loops.toml.
        notify: webhook receivers defined in loops.toml (``[[notify]]``).
    """

    queue: QueueSettings
    api: ApiSettings
    worker: WorkerSettings
    openai: OpenAISettings
    home: Path
    config_path: Path | None
    responsibilities: tuple[ResponsibilityDef, ...]
    notify: tuple[NotifyTarget, ...] = ()


# -- parsers: text (env, flags) or TOML values -> checked values ---------------------


def _int(minimum: int, maximum: int | None = None) -> Callable[[object, str], int]:
    def parse(value: object, where: str) -> int:
        number: int | None = None
        if isinstance(value, int | str) and not isinstance(value, bool):
            try:
                number = int(value)
            except ValueError:
                number = None
        if number is None or number < minimum or (maximum is not None and number > maximum):
            bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            raise errors.ConfigError(f"{where} = {value!r} is invalid; use an integer {bound}")
        return number

    return parse


def _text(value: object, where: str) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise errors.ConfigError(f"{where} = {value!r} is invalid; use a string")
    return str(value)


def _optional_text(value: object, where: str) -> str | None:
    text = _text(value, where)
    return text or None


def _path(value: object, where: str) -> Path:
    text = _text(value, where)
    if not text:
        raise errors.ConfigError(f"{where} is empty; give a file path")
    return Path(text).expanduser()


def _choice(*allowed: str) -> Callable[[object, str], str]:
    def parse(value: object, where: str) -> str:
        text = _text(value, where).strip().lower()
        if text not in allowed:
            raise errors.ConfigError(
                f"{where} = {value!r} is invalid; use one of: {', '.join(allowed)}"
            )
        return text

    return parse


def _db_url(value: object, where: str) -> str | None:
    text = _text(value, where).strip()
    if not text:
        return None
    if not text.startswith(("postgresql://", "postgres://")):
        raise errors.ConfigError(
            f"{where} = {text!r} is invalid; use a postgresql://user@host:port/db URL, "
            "or leave it unset for SQLite at QUEUE_DB_PATH"
        )
    return text


def _url(value: object, where: str) -> str:
    text = _text(value, where).strip().rstrip("/")
    if not text.startswith(("http://", "https://")):
        raise errors.ConfigError(f"{where} = {value!r} is invalid; use an http:// or https:// URL")
    return text


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One setting: its group and name, its environment variable, default and parser."""

    group: str
    name: str
    env: str | None
    default: object
    parse: Callable[[object, str], Any]


#: every setting, its default written once
FIELDS: tuple[Field, ...] = (
    Field("queue", "db_path", "QUEUE_DB_PATH", "./data/queue.sqlite", _path),
    Field("queue", "db_url", "QUEUE_DB_URL", "", _db_url),
    Field("queue", "db_pool_size", "QUEUE_DB_POOL_SIZE", 10, _int(1)),
    Field("queue", "sqlite_sync", "QUEUE_SQLITE_SYNC", "full", _choice("full", "normal")),
    Field("queue", "lease_ttl_ms", "QUEUE_LEASE_TTL_MS", 120_000, _int(100)),
    Field("queue", "max_attempts", "QUEUE_MAX_ATTEMPTS", 3, _int(1)),
    Field("queue", "max_child_depth", "QUEUE_MAX_CHILD_DEPTH", 1, _int(0)),
    Field("queue", "max_children_per_task", "QUEUE_MAX_CHILDREN_PER_TASK", 5, _int(0)),
    Field("queue", "retry_base_ms", "QUEUE_RETRY_BASE_MS", 1_000, _int(0)),
    Field("queue", "retry_cap_ms", "QUEUE_RETRY_CAP_MS", 300_000, _int(0)),
    Field("api", "host", "QUEUE_API_HOST", "127.0.0.1", _text),
    Field("api", "port", "QUEUE_API_PORT", 7070, _int(1, 65535)),
    Field("api", "token", "QUEUE_API_TOKEN", "", _optional_text),
    Field("api", "max_body_bytes", "QUEUE_MAX_BODY_BYTES", 1_048_576, _int(1)),
    Field("api", "tick_interval_ms", "QUEUE_TICK_INTERVAL_MS", 30_000, _int(0)),
    Field("worker", "api_base_url", "WORKER_API_BASE_URL", "http://127.0.0.1:7070", _url),
    Field("worker", "poll_ms", "WORKER_POLL_MS", 2_000, _int(1)),
    Field("worker", "lease_ttl_ms", "WORKER_LEASE_TTL_MS", 120_000, _int(100)),
    Field("worker", "shutdown_grace_ms", "WORKER_SHUTDOWN_GRACE_MS", 10_000, _int(0)),
    Field("openai", "base_url", "OPENAI_BASE_URL", "https://api.openai.com/v1", _url),
    Field("openai", "api_key", "OPENAI_API_KEY", "", _optional_text),
    Field("openai", "model", "OPENAI_MODEL", "", _optional_text),
    Field("", "home", "LOOPS_HOME", "~/.loops", _path),
)

_GROUPS: dict[str, type[Any]] = {
    "queue": QueueSettings,
    "api": ApiSettings,
    "worker": WorkerSettings,
    "openai": OpenAISettings,
}
_PATH_FIELDS = {("queue", "db_path"), ("", "home")}


def load_settings(
    *,
    overrides: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve every setting: defaults -> loops.toml -> environment -> ``overrides``.

    Args:
        overrides: values from CLI flags, keyed ``group.name`` (``queue.db_path``);
            ``None`` values are ignored.
        env: the environment (default ``os.environ``).
        cwd: where relative paths and ``loops.toml`` are looked up (default: the
            current directory).

    Raises:
        ConfigError: a value is invalid, naming it and the allowed ones.
    """
    environ = os.environ if env is None else env
    base = Path.cwd() if cwd is None else cwd
    config_path, document = _read_config(environ, base)
    values: dict[tuple[str, str], object] = {}
    for field in FIELDS:
        key = (field.group, field.name)
        where = f"default {field.group}.{field.name}"
        raw: object = field.default
        section = document.get(field.group, {}) if field.group else document
        if isinstance(section, dict) and field.name in section:
            raw, where = section[field.name], f"{config_path}: {field.group}.{field.name}"
        if field.env and environ.get(field.env) not in (None, ""):
            raw, where = environ[field.env], field.env
        dotted = f"{field.group}.{field.name}" if field.group else field.name
        if overrides and overrides.get(dotted) is not None:
            raw, where = overrides[dotted], f"--{field.name.replace('_', '-')}"
        value = field.parse(raw, where)
        if key in _PATH_FIELDS and isinstance(value, Path) and not value.is_absolute():
            anchor = (
                config_path.parent if where.startswith(str(config_path)) and config_path else base
            )
            value = anchor / value
        values[key] = value
    _check_unknown_keys(document, config_path)
    groups = {
        name: cls(**{f.name: values[(name, f.name)] for f in FIELDS if f.group == name})
        for name, cls in _GROUPS.items()
    }
    home = values[("", "home")]
    assert isinstance(home, Path)
    return Settings(
        queue=groups["queue"],
        api=groups["api"],
        worker=groups["worker"],
        openai=groups["openai"],
        home=home,
        config_path=config_path,
        responsibilities=_responsibilities(document.get("responsibilities", []), config_path),
        notify=_notify(document.get("notify", []), config_path, environ),
    )


def _read_config(environ: Mapping[str, str], base: Path) -> tuple[Path | None, dict[str, Any]]:
    named = environ.get(CONFIG_ENV)
    if named:
        path = Path(named).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise errors.ConfigError(f"{CONFIG_ENV} = {named!r}: no such file")
    else:
        path = base / CONFIG_FILENAME
        if not path.is_file():
            return None, {}
    try:
        return path, tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise errors.ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise errors.ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def _check_unknown_keys(document: Mapping[str, Any], path: Path | None) -> None:
    known_groups = {*_GROUPS, "responsibilities", "notify"}
    known_top = {f.name for f in FIELDS if not f.group}
    for key, value in document.items():
        if key in known_groups:
            if key in _GROUPS:
                if not isinstance(value, dict):
                    raise errors.ConfigError(f"{path}: [{key}] must be a table")
                names = {f.name for f in FIELDS if f.group == key}
                for name in value:
                    if name not in names:
                        raise errors.ConfigError(
                            f"{path}: unknown setting {key}.{name}; known: "
                            + ", ".join(sorted(names))
                        )
        elif key not in known_top:
            raise errors.ConfigError(
                f"{path}: unknown key {key!r}; known: "
                + ", ".join(sorted(known_groups | known_top))
            )


def _notify(
    entries: object, path: Path | None, environ: Mapping[str, str]
) -> tuple[NotifyTarget, ...]:
    if entries == []:
        return ()
    from loops import notifications

    return notifications.parse_targets(entries, path, environ)


_RESPONSIBILITY_KEYS = {
    "name", "every", "cron", "enabled",
    "prompt", "type", "title", "priority", "success", "check", "provider",
}  # fmt: skip


def _responsibilities(entries: object, path: Path | None) -> tuple[ResponsibilityDef, ...]:
    if not isinstance(entries, list):
        raise errors.ConfigError(f"{path}: responsibilities must be [[responsibilities]] tables")
    if not entries:
        return ()
    from loops.queue import schedules
    from loops.queue.responsibilities import ResponsibilityDef, TaskTemplate

    found: list[ResponsibilityDef] = []
    for index, entry in enumerate(entries, start=1):
        where = f"{path}: responsibility #{index}"
        if not isinstance(entry, dict):
            raise errors.ConfigError(f"{where} must be a table")
        unknown = set(entry) - _RESPONSIBILITY_KEYS
        if unknown:
            raise errors.ConfigError(
                f"{where} has unknown key(s) {', '.join(sorted(unknown))}; known: "
                + ", ".join(sorted(_RESPONSIBILITY_KEYS))
            )
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise errors.ConfigError(f"{where} needs a name")
        where = f"{path}: responsibility {name!r}"
        if any(r.name == name for r in found):
            raise errors.ConfigError(f"{where} is defined twice; names must be unique")
        if ("every" in entry) == ("cron" in entry):
            raise errors.ConfigError(f'{where} needs exactly one of every = "15m" or cron = "..."')
        try:
            schedule = (
                schedules.every(str(entry["every"]))
                if "every" in entry
                else schedules.cron(str(entry["cron"]))
            )
        except errors.ConfigError as exc:
            raise errors.ConfigError(f"{where}: {exc.message}") from None
        prompt = entry.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise errors.ConfigError(f"{where} needs a prompt")
        priority = _int(1, 5)(entry.get("priority", 3), f"{where}: priority")
        optional = {
            k: _text(entry[k], f"{where}: {k}")
            for k in ("type", "title", "success", "check", "provider")
            if k in entry
        }
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise errors.ConfigError(f"{where}: enabled must be true or false")
        found.append(
            ResponsibilityDef(
                name=name.strip(),
                schedule=schedule,
                template=TaskTemplate(prompt=prompt, priority=priority, **optional),
                enabled=enabled,
            )
        )
    return tuple(found)
