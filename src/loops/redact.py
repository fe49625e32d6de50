"""Secrets out of everything we keep: the one redaction used by events, transcripts and logs.

Agents print what they see, and they see environment variables, config files and
command lines. Whatever looks like a credential is replaced by ``[REDACTED:<kind>]``
before it is stored in the events timeline (:meth:`QueueService.append_event`,
``append_events`` and completions), in transcript and log artifacts
(:meth:`QueueService.store_artifact`) or written by a log handler
(:class:`RedactingFilter`, installed by :func:`install_logging_filter`).

The patterns recognise a credential by its shape (``sk-...``, ``ghp_...``, ``AKIA...``,
``Bearer ...``, PEM private keys) or by the name it is assigned to (``API_KEY=...``,
``"token": "..."``). They are deliberately greedy: a false positive costs a few
characters of a log line, a false negative leaks a key.

Typical use::

    from loops import redact

    redact.text("export OPENAI_API_KEY=sk-abc...")  # 'export OPENAI_API_KEY=[REDACTED:...]'
    redact.value({"text": "Authorization: Bearer eyJ..."})
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["PATTERNS", "RedactingFilter", "install_logging_filter", "text", "value"]

#: (kind, pattern); the match (or its group ``secret`` when present) is replaced
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "private-key",
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)"
        ),
    ),
    ("anthropic-key", re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{16,}")),
    ("openai-key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}")),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")),
    ("gitlab-token", re.compile(r"\bglpat-[A-Za-z0-9_\-]{16,}")),
    ("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}")),
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b")),
    ("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}")),
    ("stripe-key", re.compile(r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")),
    (
        "bearer",
        # a digit is required: "Bearer authentication" is prose, not a token
        re.compile(r"(?i)\bbearer\s+(?P<secret>(?=[A-Za-z._~+/\-]*\d)[A-Za-z0-9._~+/\-]{12,}=*)"),
    ),
    (
        "basic-auth-url",
        re.compile(r"(?i)\b[a-z][a-z0-9+.\-]{0,30}://[^\s:/@]{1,200}:(?P<secret>[^\s@/]{3,200})@"),
    ),
    (
        "assigned-secret",
        re.compile(
            # bounded, and only from a word's start: an unbounded name prefix made a
            # 64 KiB run of letters quadratic (a flooding agent stalled the gateway)
            r"(?i)\b(?:[A-Za-z0-9_\-]{0,40}?(?:api[_\-]?key|secret|token|passw(?:or)?d"
            r"|credential)[A-Za-z0-9_\-]{0,40})[\"']?[ \t]{0,8}[:=][ \t]{0,8}[\"']?"
            # a letter is required: "max_tokens: 12345678" is a count, not a secret
            r"(?P<secret>(?=[^\s\"',;}{\[\]]*[A-Za-z])[^\s\"',;}{\[\]]{8,})"
        ),
    ),
)


#: a key or variable name that holds a secret (``OPENAI_API_KEY``, ``password``...)
_SECRET_NAME = re.compile(
    r"(?i)[A-Za-z0-9_\-]*(?:api[_\-]?key|secret|passw(?:or)?d|credential|auth[_\-]?token"
    r"|access[_\-]?token|refresh[_\-]?token|private[_\-]?key)[A-Za-z0-9_\-]*"
)


def _replace(kind: str) -> Any:
    marker = f"[REDACTED:{kind}]"

    def replace(match: re.Match[str]) -> str:
        if "secret" in match.re.groupindex and match.group("secret") is not None:
            start, end = match.span("secret")
            whole_start = match.start()
            found = match.group(0)
            return found[: start - whole_start] + marker + found[end - whole_start :]
        return marker

    return replace


_REPLACERS = tuple((pattern, _replace(kind)) for kind, pattern in PATTERNS)

#: for each of :data:`PATTERNS`, lowercase ASCII strings one of which every match of it
#: contains: in ASCII text a pattern whose gate is absent from the text's lowercase form
#: cannot match, so it is not run. Each event of a chatty agent is redacted, and thirteen
#: full regex scans of every string were most of the worker's CPU per event (87 µs of it
#: against 33 µs before redaction). Gates are not used on other text: with IGNORECASE a
#: pattern's ``s`` also matches the long s and its ``i`` the dotless i, which ``lower()``
#: leaves as they are.
_GATES: tuple[tuple[str, ...], ...] = (
    ("-----begin",),  # private-key
    ("sk-ant-",),  # anthropic-key
    ("sk-",),  # openai-key
    ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),  # github-token
    ("glpat-",),  # gitlab-token
    ("xox",),  # slack-token
    ("akia", "asia", "agpa", "aida", "aroa"),  # aws-access-key
    ("aiza",),  # google-api-key
    ("k_live_", "k_test_"),  # stripe-key
    ("eyj",),  # jwt
    ("bearer",),  # bearer
    ("://",),  # basic-auth-url
    ("apikey", "api_key", "api-key", "secret", "token", "passw", "credential"),  # assigned
)
_GATED = tuple(zip(_REPLACERS, _GATES, strict=True))


def text(raw: str) -> str:
    """``raw`` with every credential-looking substring replaced by ``[REDACTED:<kind>]``."""
    if not raw:
        return raw
    if not raw.isascii():
        for pattern, replace in _REPLACERS:
            raw = pattern.sub(replace, raw)
        return raw
    low = raw.lower()
    for (pattern, replace), gate in _GATED:
        for literal in gate:
            if literal in low:
                cleaned = pattern.sub(replace, raw)
                if cleaned != raw:  # gates of the patterns after see the text as changed
                    raw, low = cleaned, cleaned.lower()
                break
    return raw


def value(data: Any) -> Any:
    """``data`` (JSON-like: dicts, lists, strings...) with every string redacted."""
    if isinstance(data, str):
        return text(data)
    if isinstance(data, Mapping):
        return {
            key: "[REDACTED:assigned-secret]"
            if isinstance(item, str) and len(item) >= 8 and _SECRET_NAME.fullmatch(str(key))
            else value(item)
            for key, item in data.items()
        }
    if isinstance(data, list | tuple):
        return [value(item) for item in data]
    return data


def content(raw: bytes) -> bytes:
    """Redact text content (UTF-8); bytes that are not UTF-8 text are returned unchanged."""
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    cleaned = text(decoded)
    return raw if cleaned == decoded else cleaned.encode("utf-8")


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's formatted message (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its redacted form."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: leave it to the handler
            return True
        cleaned = text(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = text(record.exc_text)
        return True


def install_logging_filter(logger: logging.Logger | None = None) -> None:
    """Add :class:`RedactingFilter` to every handler of ``logger`` (the root by default).

    Filters on handlers (not loggers) see records from every child logger too.
    """
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
