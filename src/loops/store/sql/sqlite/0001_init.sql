-- The queue schema (DESIGN section 2). Times are integer milliseconds since the epoch, UTC.
-- Ids are rowids without AUTOINCREMENT (which costs a sqlite_sequence write per insert):
-- rows are never deleted, so new ids are always larger than every earlier one.

CREATE TABLE tasks (
    id                  INTEGER PRIMARY KEY,
    type                TEXT    NOT NULL,
    title               TEXT    NOT NULL,
    prompt              TEXT    NOT NULL,
    success             TEXT,
    "check"             TEXT,
    provider            TEXT,
    model               TEXT,
    cwd                 TEXT,
    max_iterations      INTEGER,
    min_tests           INTEGER,
    priority            INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
    status              TEXT    NOT NULL CHECK (status IN ('queued', 'leased', 'running',
                            'waiting_children', 'done', 'failed', 'blocked', 'cancelled')),
    attempts            INTEGER NOT NULL,
    max_attempts        INTEGER NOT NULL CHECK (max_attempts >= 1),
    lease_owner         TEXT,
    lease_token         TEXT,
    lease_expires_at    INTEGER,
    run_after           INTEGER NOT NULL,
    parent_id           INTEGER REFERENCES tasks (id),
    depth               INTEGER NOT NULL,
    idempotency_key     TEXT,
    responsibility      TEXT,
    result              TEXT,
    error               TEXT,
    usage_input_tokens  INTEGER NOT NULL DEFAULT 0,
    usage_output_tokens INTEGER NOT NULL DEFAULT 0,
    usage_cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    usage_cost_usd      REAL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    finished_at         INTEGER
);

-- The lease query walks this partial index in (priority, id) order: O(log n) per lease
-- however deep the queue (run_after is checked from the index, no table lookup).
CREATE INDEX tasks_ready ON tasks (priority, id, run_after, type) WHERE status = 'queued';
-- Expired leases are found by their own query on this index, never by an OR in the lease.
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE status IN ('leased', 'running');
CREATE INDEX tasks_status_id ON tasks (status, id);
-- Partial: a NULL key (the common case) costs no index entry.
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status IN ('failed', 'blocked');

CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    ts      INTEGER NOT NULL,
    type    TEXT    NOT NULL,
    task_id INTEGER,
    data    TEXT    NOT NULL
);
CREATE INDEX events_task ON events (task_id, id) WHERE task_id IS NOT NULL;

CREATE TABLE state (
    task_id    INTEGER NOT NULL,  -- 0: global
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, key)
) WITHOUT ROWID;

CREATE TABLE task_steps (
    id              INTEGER PRIMARY KEY,
    task_id         INTEGER NOT NULL REFERENCES tasks (id),
    name            TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('DONE', 'FAILED')),
    idempotency_key TEXT    NOT NULL,
    note            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (task_id, idempotency_key)
);

CREATE TABLE artifacts (
    id         INTEGER PRIMARY KEY,
    task_id    INTEGER NOT NULL REFERENCES tasks (id),
    name       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    sha256     TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX artifacts_task ON artifacts (task_id, id);

CREATE TABLE responsibilities (
    name               TEXT PRIMARY KEY,
    schedule           TEXT    NOT NULL,
    template           TEXT    NOT NULL,
    enabled            INTEGER NOT NULL,
    last_dispatched_at INTEGER,
    next_due_at        INTEGER NOT NULL,
    last_task_id       INTEGER
);
