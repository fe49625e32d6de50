"""Shared test configuration: PostgreSQL for the tests marked ``postgres``.

They use ``QUEUE_TEST_PG_URL`` (default: the local server at 127.0.0.1:5432, database
``test``) and skip with the reason when it is unreachable, unless
``LOOPS_REQUIRE_POSTGRES=1`` (set by ``.ci/run``): then they fail, so CI never skips them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_URL = os.environ.get("QUEUE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _unreachable(url: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed: pip install 'loops[postgres]'"
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The URL of a reachable PostgreSQL server (skips, or fails in CI, without one)."""
    reason = _unreachable(PG_URL)
    if reason is not None:
        message = (
            f"PostgreSQL is not reachable at QUEUE_TEST_PG_URL={PG_URL} ({reason}); "
            "start it or point QUEUE_TEST_PG_URL at one"
        )
        if os.environ.get("LOOPS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{message} (LOOPS_REQUIRE_POSTGRES=1: not skipping)")
        pytest.skip(message)
    return PG_URL


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh schema name for one test; the schema is dropped afterwards."""
    import psycopg

    name = f"loops_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def pg_schema_url(url: str, schema: str) -> str:
    """``url`` with the schema as search path (for subprocesses and QUEUE_DB_URL)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"
