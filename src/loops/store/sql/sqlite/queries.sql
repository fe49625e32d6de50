-- Named queries of the SQLite store. Each starts with a "-- name: NAME" line.
-- Column lists of tasks must match loops.store.sqlite.TASK_COLUMNS.

-- name: insert_task
-- created_event = 1: trigger tasks_created_event writes the task's task.created event
INSERT INTO tasks (type, title, prompt, success, "check", provider, model, cwd,
    max_iterations, min_tests, priority, status, attempts, max_attempts, lease_owner,
    lease_token, lease_expires_at, run_after, parent_id, depth, idempotency_key,
    responsibility, result, error, usage_input_tokens, usage_output_tokens,
    usage_cached_input_tokens, usage_cost_usd, created_at, updated_at, finished_at,
    created_event)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
    ?, ?, ?, 1)

-- name: save_task
UPDATE tasks SET status = ?, attempts = ?, lease_owner = ?, lease_token = ?,
    lease_expires_at = ?, run_after = ?, result = ?, error = ?, usage_input_tokens = ?,
    usage_output_tokens = ?, usage_cached_input_tokens = ?, usage_cost_usd = ?,
    updated_at = ?, finished_at = ?, wake_each = ?
WHERE id = ?

-- name: save_task_if_unchanged
-- A completion decided outside the writer lock: stored only while every mutable column
-- still holds what the decision read (the second half of the parameters).
UPDATE tasks SET status = ?, attempts = ?, lease_owner = ?, lease_token = ?,
    lease_expires_at = ?, run_after = ?, result = ?, error = ?, usage_input_tokens = ?,
    usage_output_tokens = ?, usage_cached_input_tokens = ?, usage_cost_usd = ?,
    updated_at = ?, finished_at = ?, wake_each = ?
WHERE id = ? AND status = ? AND attempts = ? AND lease_owner IS ? AND lease_token IS ?
    AND lease_expires_at IS ? AND run_after = ? AND result IS ? AND error IS ?
    AND usage_input_tokens = ? AND usage_output_tokens = ? AND usage_cached_input_tokens = ?
    AND usage_cost_usd IS ? AND updated_at = ? AND finished_at IS ? AND wake_each = ?

-- name: get_task
SELECT * FROM tasks WHERE id = ?

-- name: task_by_key
SELECT * FROM tasks WHERE idempotency_key = ? AND idempotency_key IS NOT NULL

-- name: ready_tasks
-- tasks_ready holds due tasks only (migration 0007); deferred ones that came due are
-- promoted into it first (promote_due). run_after <= ? still guards against a writer
-- whose clock ran ahead of this one.
SELECT * FROM tasks INDEXED BY tasks_ready
WHERE status = 'queued' AND run_after <= updated_at AND run_after <= ?
ORDER BY priority, id
LIMIT ?

-- name: expired_tasks
SELECT * FROM tasks INDEXED BY tasks_lease_expiry
WHERE status IN ('leased', 'running') AND lease_expires_at <= ?
ORDER BY lease_expires_at
LIMIT ?

-- name: any_ready
SELECT EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_ready
               WHERE status = 'queued' AND run_after <= updated_at AND run_after <= ?),
       EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_deferred
               WHERE status = 'queued' AND run_after > updated_at AND run_after <= ?)

-- name: promote_due
-- Deferred tasks whose run_after has come move into tasks_ready: updated_at becomes
-- the moment they became ready (their run_after): one seek into tasks_deferred, then
-- each due entry once.
UPDATE tasks INDEXED BY tasks_deferred SET updated_at = run_after
WHERE status = 'queued' AND run_after > updated_at AND run_after <= ?

-- name: any_expired
SELECT 1 FROM tasks INDEXED BY tasks_lease_expiry
WHERE status IN ('leased', 'running') AND lease_expires_at <= ?
LIMIT 1

-- name: lease_work
-- A lease's read before the writer lock, in one statement (one snapshot): whether a
-- task is ready, whether a lease expired (the lease then reclaims, synced), and whether
-- a deferred task came due (it is promoted first: promote_due). The typed form inserts
-- "AND type IN (...)" after the ready probe's run_after test.
SELECT EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_ready
               WHERE status = 'queued' AND run_after <= updated_at AND run_after <= ?),
       EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_lease_expiry
               WHERE status IN ('leased', 'running') AND lease_expires_at <= ?),
       EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_deferred
               WHERE status = 'queued' AND run_after > updated_at AND run_after <= ?)

-- name: children
SELECT id, status FROM tasks WHERE parent_id = ? ORDER BY id

-- name: insert_event
INSERT INTO events (ts, type, task_id, data) VALUES (?, ?, ?, ?)

-- name: events_after
SELECT id, ts, type, task_id, data FROM events WHERE id > ? ORDER BY id LIMIT ?

-- name: events_after_for_task
SELECT id, ts, type, task_id, data FROM events WHERE task_id = ? AND id > ? ORDER BY id LIMIT ?

-- name: events_latest
SELECT * FROM (SELECT id, ts, type, task_id, data FROM events ORDER BY id DESC LIMIT ?)
ORDER BY id

-- name: delete_oldest_events
DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?) AND ts < ?

-- name: events_latest_for_task
SELECT * FROM (SELECT id, ts, type, task_id, data FROM events WHERE task_id = ?
    ORDER BY id DESC LIMIT ?)
ORDER BY id

-- name: upsert_step
INSERT INTO task_steps (task_id, name, status, idempotency_key, note, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (task_id, idempotency_key) DO UPDATE SET
    name = excluded.name, status = excluded.status, note = excluded.note,
    updated_at = excluded.updated_at
RETURNING task_id, name, status, idempotency_key, note, created_at, updated_at

-- name: steps
SELECT task_id, name, status, idempotency_key, note, created_at, updated_at
FROM task_steps WHERE task_id = ? ORDER BY id

-- name: count_related
SELECT (SELECT count(*) FROM task_steps WHERE task_id = ?1),
       (SELECT count(*) FROM tasks WHERE parent_id = ?1),
       (SELECT count(*) FROM artifacts WHERE task_id = ?1)

-- name: get_state
SELECT value FROM state WHERE task_id = ? AND key = ?

-- name: put_state
INSERT INTO state (task_id, key, value, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (task_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at

-- name: insert_artifact
INSERT INTO artifacts (task_id, name, kind, size, sha256, path, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)

-- name: artifacts
SELECT * FROM artifacts ORDER BY id DESC LIMIT ?

-- name: artifacts_for_task
SELECT * FROM artifacts WHERE task_id = ? ORDER BY id DESC LIMIT ?

-- name: get_artifact
SELECT * FROM artifacts WHERE id = ?

-- name: responsibilities
SELECT name, schedule, template, enabled, last_dispatched_at, next_due_at, last_task_id
FROM responsibilities ORDER BY name

-- name: save_responsibility
INSERT OR REPLACE INTO responsibilities (name, schedule, template, enabled,
    last_dispatched_at, next_due_at, last_task_id)
VALUES (?, ?, ?, ?, ?, ?, ?)

-- name: counts_by_status
-- Queued tasks are counted on tasks_ready and tasks_deferred, the others on the partial
-- tasks_status_id.
SELECT 'queued', queued FROM (
    SELECT (SELECT count(*) FROM tasks INDEXED BY tasks_ready
            WHERE status = 'queued' AND run_after <= updated_at)
         + (SELECT count(*) FROM tasks INDEXED BY tasks_deferred
            WHERE status = 'queued' AND run_after > updated_at) AS queued)
WHERE queued > 0
UNION ALL
SELECT status, count(*) FROM tasks INDEXED BY tasks_status_id WHERE status <> 'queued'
GROUP BY status

-- name: held_tasks
SELECT * FROM tasks INDEXED BY tasks_lease_expiry
WHERE status IN ('leased', 'running') ORDER BY lease_expires_at LIMIT ?

-- name: recent_failures
SELECT * FROM tasks INDEXED BY tasks_finished
WHERE status IN ('failed', 'blocked') ORDER BY finished_at DESC LIMIT ?

-- name: insert_root_task
-- A root task without an idempotency key, fresh from loops.queue.tasks.new_task: the
-- lease, outcome and usage columns keep their NULL or zero defaults and the parent,
-- depth and key are literals (the create hot path binds 16 values, not 31: on Python
-- 3.11 each bound None costs more than the column it fills). Its task.created event is
-- written by trigger tasks_created_event (created_event = 1), in this statement.
INSERT INTO tasks (type, title, prompt, success, "check", provider, model, cwd,
    max_iterations, min_tests, priority, status, attempts, max_attempts, run_after,
    parent_id, depth, idempotency_key, responsibility, created_at, updated_at, created_event)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, NULL, 0, NULL, ?, ?, ?, 1)

-- name: insert_root_task_plain
-- insert_root_task for a task without engine options (check, provider, model, cwd,
-- max_iterations, min_tests: literal NULLs, so not bound).
INSERT INTO tasks (type, title, prompt, success, "check", provider, model, cwd,
    max_iterations, min_tests, priority, status, attempts, max_attempts, run_after,
    parent_id, depth, idempotency_key, responsibility, created_at, updated_at, created_event)
VALUES (?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, NULL, ?, 'queued', 0, ?, ?, NULL, 0, NULL,
    ?, ?, ?, 1)

-- name: insert_root_task_bare
-- insert_root_task_plain for a task without success criteria or responsibility either.
INSERT INTO tasks (type, title, prompt, success, "check", provider, model, cwd,
    max_iterations, min_tests, priority, status, attempts, max_attempts, run_after,
    parent_id, depth, idempotency_key, responsibility, created_at, updated_at, created_event)
VALUES (?, ?, ?, NULL, NULL, NULL, NULL, NULL, NULL, NULL, ?, 'queued', 0, ?, ?, NULL, 0, NULL,
    NULL, ?, ?, 1)

-- name: held_by
SELECT * FROM tasks INDEXED BY tasks_lease_expiry
WHERE status IN ('leased', 'running') AND lease_owner = ?

-- name: is_stopped
SELECT 1 FROM state WHERE task_id = 0 AND key = ?

-- name: mark_stopped
INSERT INTO state (task_id, key, value, updated_at) VALUES (0, ?, 'true', ?)
ON CONFLICT (task_id, key) DO UPDATE SET updated_at = excluded.updated_at

-- name: clear_stopped
DELETE FROM state WHERE task_id = 0 AND key = ?

-- name: forget_stopped
DELETE FROM state WHERE task_id = 0 AND key >= 'worker.stopped:' AND key < 'worker.stopped;'
    AND updated_at < ?
