"""The single place that picks and opens the store backend from the settings."""

from __future__ import annotations

from loops import config, errors
from loops.store.base import Store


def open_store(settings: config.Settings, *, migrating: bool = False) -> Store:
    """Open the configured store, ready to use.

    ``QUEUE_DB_URL`` (a postgresql:// URL) selects PostgreSQL; otherwise SQLite at
    ``QUEUE_DB_PATH``. A new database is created and migrated on first use; an
    existing one with pending migrations is refused unless ``migrating`` (the caller
    is ``loop db:migrate``, which then applies them).

    Raises:
        MigrationRequired: the schema is behind and ``migrating`` is false.
        ConfigError: the backend cannot be used with these settings.
    """
    queue = settings.queue
    if queue.db_url is not None:
        try:
            from loops.store import postgres  # type: ignore[attr-defined]
        except ImportError:
            raise errors.ConfigError(
                "QUEUE_DB_URL selects PostgreSQL, whose store is not in this version of "
                "loops yet; unset QUEUE_DB_URL to use SQLite at QUEUE_DB_PATH"
            ) from None
        store: Store = postgres.open_postgres(settings)  # pragma: no cover - later issue
    else:
        from loops.store.sqlite import SqliteStore

        store = SqliteStore(queue.db_path, synchronous=queue.sqlite_sync)
    try:
        if store.is_new() and not migrating:
            store.migrate()
        elif not migrating:  # a new database is migrated above; db:migrate migrates itself
            pending = store.pending_migrations()
            if pending:
                raise errors.MigrationRequired(
                    f"the database at {queue.db_path} needs migrations {', '.join(pending)}: "
                    "run `loop db:migrate`"
                )
    except BaseException:
        store.close()
        raise
    return store
