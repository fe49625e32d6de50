"""The pure part of webhook notifications: kinds, payload, signature."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from loops import notifications


@pytest.mark.parametrize(
    ("event_type", "data", "kind"),
    [
        ("task.completed", {}, "task.done"),
        ("task.failed", {"error": "x"}, "task.failed"),
        ("task.blocked", {}, "task.blocked"),
        ("approval.needed", {"what": "merge"}, "approval.needed"),
        ("task.waiting_approval", {"reason": "waiting_approval: g: ok?"}, "approval.needed"),
        ("run.finished", {"status": "paused"}, "run.paused"),
        ("run.finished", {"status": "pass"}, None),
        ("budget.exceeded", {}, None),
        ("task.created", {}, None),
        ("notify.failed", {}, None),
    ],
)
def test_kind_of_each_event(event_type: str, data: dict[str, str], kind: str | None) -> None:
    assert notifications.kind_of(event_type, data) == kind


def test_signature_is_the_hmac_of_the_exact_body() -> None:
    body = notifications.payload(
        "task.failed", event={"id": 7, "type": "task.failed"}, task={"id": 3, "title": "<b>"}
    )
    assert json.loads(body) == {
        "kind": "task.failed",
        "event": {"id": 7, "type": "task.failed"},
        "task": {"id": 3, "title": "<b>"},
    }
    expected = hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert notifications.signature("key", body) == f"sha256={expected}"
    assert notifications.signature("other", body) != f"sha256={expected}"


def test_targets_want_only_their_kinds() -> None:
    (target,) = notifications.parse_targets(
        [{"url": "http://127.0.0.1:1/h", "events": ["task.done"], "secret": "s3cr3t-value"}],
        None,
        {},
    )
    assert target.wants("task.done") and not target.wants("task.failed")
    assert "s3cr3t-value" not in repr(target)  # the secret stays out of logs
