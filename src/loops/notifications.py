"""Webhook notifications: which queue events are worth telling someone about, and how.

``loops.toml`` lists the receivers::

    [[notify]]
    url = "https://hooks.example.org/loops"
    events = ["task.failed", "task.blocked", "run.paused"]   # default: all of NOTIFY_KINDS
    secret_env = "LOOPS_WEBHOOK_SECRET"                      # or: secret = "..."

Each notification is a JSON ``POST`` with the headers ``X-Loops-Event`` (the kind),
``X-Loops-Delivery`` (the queue event id, the same on every retry) and, with a
secret, ``X-Loops-Signature: sha256=<hex HMAC-SHA256 of the raw body>``. The gateway's
background sender (:mod:`loops.gateway.notifier`) delivers them; this module is the
pure part: the kinds, the payload and the signature.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loops import errors

#: what a receiver can ask for, and what each means
NOTIFY_KINDS: dict[str, str] = {
    "task.done": "a task finished done",
    "task.failed": "a task failed",
    "task.blocked": "a task is blocked",
    "run.paused": "a run was paused (a budget ran out)",
    "approval.needed": "an agent or loop waits for a human's approval",
}
#: header names
EVENT_HEADER = "X-Loops-Event"
DELIVERY_HEADER = "X-Loops-Delivery"
SIGNATURE_HEADER = "X-Loops-Signature"

_KIND_OF_TYPE = {
    "task.completed": "task.done",
    "task.failed": "task.failed",
    "task.blocked": "task.blocked",
    "approval.needed": "approval.needed",
    "task.waiting_approval": "approval.needed",
}


@dataclasses.dataclass(frozen=True, slots=True)
class NotifyTarget:
    """One webhook receiver.

    Attributes:
        url: where notifications are posted (http or https).
        kinds: which of :data:`NOTIFY_KINDS` it gets.
        secret: the HMAC key of the signature header (``None``: unsigned).
        unset_secret_env: the variable its ``secret_env`` names when that was not
            set as the settings loaded: the receiver cannot be signed for, and
            :func:`require_secrets` refuses to send to it.
        origin: where it is defined (the loops.toml and the table's number).
    """

    url: str
    kinds: frozenset[str]
    secret: str | None = dataclasses.field(default=None, repr=False)
    unset_secret_env: str | None = None
    origin: str = ""

    def wants(self, kind: str) -> bool:
        """Whether this receiver asked for ``kind``."""
        return kind in self.kinds


def kind_of(event_type: str, data: Mapping[str, Any]) -> str | None:
    """The notification kind of a queue event, or ``None`` when it is not one.

    A run is paused by its budget when its ``run.finished`` event says ``paused``.
    """
    if event_type == "run.finished":
        return "run.paused" if data.get("status") == "paused" else None
    return _KIND_OF_TYPE.get(event_type)


def payload(kind: str, *, event: Mapping[str, Any], task: Mapping[str, Any] | None) -> bytes:
    """The JSON body of a notification: the kind, the queue event, the task (if any)."""
    body = {"kind": kind, "event": dict(event), "task": dict(task) if task else None}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def signature(secret: str, body: bytes) -> str:
    """The ``X-Loops-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


_KEYS = {"url", "events", "secret", "secret_env"}


def parse_targets(
    entries: object, path: Path | None, environ: Mapping[str, str] | None = None
) -> tuple[NotifyTarget, ...]:
    """The ``[[notify]]`` tables of ``loops.toml``, checked.

    Raises:
        ConfigError: a table is malformed, naming it and what to write instead.
    """
    env = os.environ if environ is None else environ
    if not isinstance(entries, list):
        raise errors.ConfigError(f"{path}: notify must be [[notify]] tables")
    found: list[NotifyTarget] = []
    for index, entry in enumerate(entries, start=1):
        where = f"{path}: notify #{index}"
        if not isinstance(entry, dict):
            raise errors.ConfigError(f"{where} must be a table")
        unknown = set(entry) - _KEYS
        if unknown:
            raise errors.ConfigError(
                f"{where} has unknown key(s) {', '.join(sorted(unknown))}; known: "
                + ", ".join(sorted(_KEYS))
            )
        url = entry.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise errors.ConfigError(f'{where} needs url = "http(s)://..."')
        kinds = entry.get("events", list(NOTIFY_KINDS))
        if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
            raise errors.ConfigError(f"{where}: events must be a non-empty list of names")
        bad = sorted(set(kinds) - set(NOTIFY_KINDS))
        if bad:
            raise errors.ConfigError(
                f"{where}: unknown event(s) {', '.join(bad)}; known: " + ", ".join(NOTIFY_KINDS)
            )
        secret, unset = _secret(entry, where, env)
        found.append(NotifyTarget(url, frozenset(kinds), secret, unset, where))
    return tuple(found)


def require_secrets(targets: Sequence[NotifyTarget]) -> None:
    """Check that every receiver with a ``secret_env`` got its secret.

    Only what sends notifications (the gateway) calls this, as it starts: a missing
    secret must not stop the commands that never send one.

    Raises:
        ConfigError: a ``secret_env`` names a variable that is not set, naming it
            and the fix.
    """
    for target in targets:
        name = target.unset_secret_env
        if name is not None:
            raise errors.ConfigError(
                f"{target.origin or '[[notify]]'} ({target.url}): secret_env names {name}, "
                "which is not set, so its webhooks cannot be signed. Set it where the "
                f"gateway starts (export {name}=...), or remove secret_env from that "
                "[[notify]] table to send them unsigned"
            )


def _secret(
    entry: Mapping[str, Any], where: str, env: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """The table's secret, and the variable its ``secret_env`` names if that is unset."""
    if "secret" in entry and "secret_env" in entry:
        raise errors.ConfigError(f"{where}: give secret or secret_env, not both")
    if "secret_env" in entry:
        name = entry["secret_env"]
        if not isinstance(name, str) or not name:
            raise errors.ConfigError(f"{where}: secret_env must name an environment variable")
        value = env.get(name)
        return (value, None) if value else (None, name)
    secret = entry.get("secret")
    if secret is None:
        return None, None
    if not isinstance(secret, str) or not secret:
        raise errors.ConfigError(f"{where}: secret must be a non-empty string")
    return secret, None
