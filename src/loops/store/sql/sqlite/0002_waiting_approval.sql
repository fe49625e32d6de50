-- A task may wait for a person's answer at a human gate: status 'waiting_approval'.
-- SQLite cannot change a CHECK constraint in place, so the tasks table is rebuilt (its
-- rows copied as they are, ids kept) and its indexes made again. Foreign keys are not
-- enforced on the store's connections, so dropping the old table leaves the references
-- of task_steps and artifacts to name the new one once it is renamed.

CREATE TABLE tasks_new (
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
                            'waiting_children', 'waiting_approval', 'done', 'failed',
                            'blocked', 'cancelled')),
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

INSERT INTO tasks_new SELECT * FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;


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
