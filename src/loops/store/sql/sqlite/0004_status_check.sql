-- The status CHECK as a chain of equalities instead of `status IN (nine values)`.
-- SQLite evaluates an IN list of more than two constants by building a temporary
-- b-tree of the constants, once per execution of each statement that writes the
-- column: every task insert, and every update that changes a task's status (each
-- create spent about a fifth of its CPU building it). An OR of equalities is a few
-- comparisons, in the order tasks most often have them. Same values allowed. SQLite
-- cannot change a CHECK constraint in place, so the table is rebuilt as in 0002 (rows
-- copied as they are, ids kept, indexes made again).

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
    status              TEXT    NOT NULL CHECK (status = 'queued' OR status = 'leased'
                            OR status = 'running' OR status = 'done'
                            OR status = 'waiting_children' OR status = 'waiting_approval'
                            OR status = 'failed' OR status = 'blocked'
                            OR status = 'cancelled'),
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
    finished_at         INTEGER,
    wake_each           INTEGER NOT NULL DEFAULT 0
);

INSERT INTO tasks_new SELECT * FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;

-- The indexes of 0002, unchanged.
CREATE INDEX tasks_ready ON tasks (priority, id, run_after, type) WHERE status = 'queued';
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE status IN ('leased', 'running');
CREATE INDEX tasks_status_id ON tasks (status, id);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status IN ('failed', 'blocked');
