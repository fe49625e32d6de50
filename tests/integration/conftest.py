"""Store backends for the contract suite: add a backend with one more fixture param."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from loops.store.base import Store
from loops.store.memory import MemoryStore
from loops.store.sqlite import SqliteStore

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated, empty store of each backend, closed afterwards."""
    counter = itertools.count(1)

    def nonce() -> str:
        return f"n{next(counter)}"

    backend: Store
    if request.param == "memory":
        backend = MemoryStore(nonce=nonce)
    elif request.param == "sqlite":
        backend = SqliteStore(tmp_path / "queue.sqlite", synchronous="normal", nonce=nonce)
    elif request.param == "postgres":
        from loops.store.postgres import PostgresStore

        schema = request.getfixturevalue("pg_schema")
        backend = PostgresStore(request.getfixturevalue("pg_url"), schema=schema, nonce=nonce)
    else:  # pragma: no cover - a new backend must be added here
        raise AssertionError(request.param)
    backend.migrate()
    yield backend
    backend.close()
