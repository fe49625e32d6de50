"""Secret redaction: the patterns, nested values, the logging filter, and the service's
event, completion and artifact paths (the one place every stored text goes through)."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from loops import config, redact
from loops.services.queue import QueueService, task_spec
from loops.store.memory import MemoryStore

SECRETS = {
    "openai": "sk-proj-Abc123def456GHI789jkl012",
    "anthropic": "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123",
    "github": "ghp_0123456789abcdefghijABCDEFGHIJ012345",
    "github-fine": "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "slack": "xoxb-123456789012-abcdefghijkl",
    "google": "AIzaSyA0123456789abcdefghijklmnopqrstuv",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
}


@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
def test_each_known_shape_is_redacted_wherever_it_appears(secret: str) -> None:
    for text in (secret, f"key: {secret} end", f'{{"k": "{secret}"}}', f"x={secret}\n"):
        cleaned = redact.text(text)
        assert secret not in cleaned
        assert "[REDACTED:" in cleaned


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Authorization: Bearer abc.def123456789xyz", "Authorization: Bearer [REDACTED:"),
        ("export OPENAI_API_KEY=verysecretvalue1", "export OPENAI_API_KEY=[REDACTED:"),
        ('"password": "hunter2hunter2"', '"password": "[REDACTED:'),
        ("https://bob:pa55word@example.com/repo.git", "https://bob:[REDACTED:"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----", ""),
    ],
)
def test_assigned_and_embedded_secrets_keep_their_context(text: str, kept: str) -> None:
    cleaned = redact.text(text)
    assert cleaned.startswith(kept)
    assert "[REDACTED:" in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "Bearer authentication is used by the gateway",
        '"input_tokens": 12345678, "output_tokens": 99999999',
        "the token limit was reached after 3 turns",
        "sk-short",
        "ran 12 tests in 0.5s",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact.text(text) == text


def test_nested_values_and_secret_named_keys() -> None:
    data = {
        "text": f"use {SECRETS['openai']}",
        "items": [{"api_key": "abcdefgh12"}, 3, None],
        "password": "hunter2hunter2",
        "max_tokens": "1234567890",
    }
    cleaned = redact.value(data)
    assert SECRETS["openai"] not in str(cleaned)
    assert cleaned["items"][0]["api_key"].startswith("[REDACTED:")
    assert cleaned["password"].startswith("[REDACTED:")
    assert cleaned["max_tokens"] == "1234567890"
    assert cleaned["items"][1:] == [3, None]


def test_binary_content_is_kept_and_text_content_redacted() -> None:
    assert (
        redact.content(b"\xff\xfe" + SECRETS["aws"].encode())
        == b"\xff\xfe" + SECRETS["aws"].encode()
    )
    assert SECRETS["aws"].encode() not in redact.content(f"k {SECRETS['aws']}".encode())


def test_the_logging_filter_redacts_messages_arguments_and_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("loops.test.redact")
    caplog.handler.addFilter(redact.RedactingFilter())
    with caplog.at_level(logging.INFO):
        logger.info("agent said %s", f"token {SECRETS['github']}")
        try:
            raise ValueError(f"bad key {SECRETS['anthropic']}")
        except ValueError:
            logger.exception("failed")
    assert SECRETS["github"] not in caplog.text
    assert SECRETS["anthropic"] not in caplog.text
    assert "[REDACTED:github-token]" in caplog.text


def test_install_logging_filter_covers_every_root_handler() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        redact.install_logging_filter()
        redact.install_logging_filter()  # idempotent
        assert sum(isinstance(f, redact.RedactingFilter) for f in handler.filters) == 1
    finally:
        root.removeHandler(handler)


def test_the_service_redacts_events_completions_and_text_artifacts(tmp_path: Path) -> None:
    store = MemoryStore()
    store.migrate()
    settings = config.load_settings(env={}, cwd=tmp_path)
    service = QueueService(store, settings.queue, rng=random.Random(1))
    task = service.create_task(task_spec({"prompt": "p"})).task
    leak = f"OPENAI_API_KEY={SECRETS['openai']} and {SECRETS['aws']}"
    service.append_event("agent.text", task_id=task.id, data={"text": leak})
    service.append_events(task.id, [("agent.text", {"text": leak, "n": [leak]})])
    leased = service.lease_task(task.id, worker="w")
    service.complete(task.id, lease_token=leased.lease.token, status="failed", error=leak)
    transcript = service.store_artifact(
        task.id, name="transcript.jsonl", kind="transcript", content=leak.encode()
    )
    diff = service.store_artifact(task.id, name="changes.diff", kind="diff", content=b"+x = 1\n")
    stored = str([e.data for e in service.list_events(task_id=task.id, limit=100)])
    assert SECRETS["openai"] not in stored and SECRETS["aws"] not in stored
    assert SECRETS["openai"] not in (service.get_task(task.id).error or "")
    assert SECRETS["aws"].encode() not in service.read_artifact(transcript.id)
    assert service.read_artifact(diff.id) == b"+x = 1\n"


def _every_pattern(raw: str) -> str:
    """Redaction without the literal gates: every pattern over the text, in order."""
    for pattern, replace in redact._REPLACERS:
        raw = pattern.sub(replace, raw)
    return raw


#: pieces that make or nearly make each pattern's matches, in every case
_PIECES = [
    *SECRETS.values(),
    "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
    "glpat-abcdefghij0123456789", "sk_live_0123456789abcdefXYZ", "rk_test_0123456789abcdefXYZ",
    "Bearer abc.def123456789xyz", "BEARER 0123456789abcdef", "bearer authentication",
    "https://user:hunter22@example.com/x", "HTTP://U:pw1@H", "OPENAI_API_KEY=", "Api-Key: ",
    "password = ", "PASSWD:", "my_secret=", "TOKEN:", "credentials=", "max_tokens: 12345678",
    "gho_", "ASIA", "aiza", "eyJ", "xoxp-", "sk-", "=", ":", "\"", "'", " ", "\n", "\t", "]",
    "verysecretvalue1", "abcdefghij", "0123456789", "[REDACTED:github-token]", "é", "\u212a",
    "\u017f", "\u0130", "\u0131", "\u017fecret=", "to\u212aen: abcdefgh1", "credent\u0131al=",
    "Kelvin",
]  # fmt: skip


def test_the_literal_gates_never_change_what_is_redacted() -> None:
    """A gate only skips a pattern that cannot match: the result is the full pass's,
    on ASCII and non-ASCII text (where the gates are not used), over random mixes of
    secrets, near-misses, separators and the characters IGNORECASE folds oddly."""
    rng = random.Random(7)
    for _ in range(4_000):
        raw = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 8)))
        assert redact.text(raw) == _every_pattern(raw), raw
    for piece in _PIECES:
        assert redact.text(piece) == _every_pattern(piece), piece
