-- A task may wait for a person's answer at a human gate: status 'waiting_approval'.
-- The column's CHECK constraint (named by PostgreSQL tasks_status_check) is replaced.

ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (status IN ('queued', 'leased',
    'running', 'waiting_children', 'waiting_approval', 'done', 'failed', 'blocked',
    'cancelled'));
