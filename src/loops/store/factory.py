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
            from loops.store import postgres
        except ImportError as exc:  # psycopg itself raises ConfigError with the fix
            raise errors.ConfigError(
                f"QUEUE_DB_URL selects PostgreSQL, which cannot be loaded ({exc}): "
                "install the postgres extra (in the loops checkout: scripts/bootstrap, "
                "or pip install '.[postgres]')"
            ) from exc
        store: Store = postgres.open_postgres(settings)
        where = postgres.describe_url(queue.db_url)
    else:
        from loops.store.sqlite import SqliteStore

        store = SqliteStore(queue.db_path, synchronous=queue.sqlite_sync)
        where = str(queue.db_path)
    try:
        if store.is_new() and not migrating:
            store.migrate()
        elif not migrating:  # a new database is migrated above; db:migrate migrates itself
            pending = store.pending_migrations()
            if pending:
                raise errors.MigrationRequired(
                    f"the database at {where} needs migrations {', '.join(pending)}: "
                    "run `loop db:migrate`"
                )
    except BaseException:
        store.close()
        raise
    return store
