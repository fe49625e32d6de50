-- Named queries of the PostgreSQL store. Each starts with a "-- name: NAME" line.
-- Task rows are selected as `*`, in the column order of 0001_init.sql (see postgres._task).

-- name: insert_task
INSERT INTO tasks (type, title, prompt, success, "check", provider, model, cwd,
    max_iterations, min_tests, priority, status, attempts, max_attempts, lease_owner,
    lease_token, lease_expires_at, run_after, parent_id, depth, idempotency_key,
    responsibility, result, error, usage_input_tokens, usage_output_tokens,
    usage_cached_input_tokens, usage_cost_usd, created_at, updated_at, finished_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
    %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING id

-- name: create_task
-- A root task and its task.created event in one statement, its own transaction (sent
-- alone on an autocommit connection); nothing for a known key. The event's row joins
-- the events lock's (shared, held to commit; see "The events lock" below), so the lock
-- is taken before the event's id. Only the new id comes back: the rest is as sent.
WITH t AS (
    INSERT INTO tasks (type, title, prompt, success, "check", provider, model, cwd,
        max_iterations, min_tests, priority, status, attempts, max_attempts, lease_owner,
        lease_token, lease_expires_at, run_after, parent_id, depth, idempotency_key,
        responsibility, result, error, usage_input_tokens, usage_output_tokens,
        usage_cached_input_tokens, usage_cost_usd, created_at, updated_at, finished_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
        %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, created_at
), e AS (
    INSERT INTO events (ts, type, task_id, data)
    SELECT t.created_at, 'task.created', t.id, %s::jsonb
    FROM t, LATERAL (SELECT pg_advisory_xact_lock_shared(7001, hashtext(current_schema()))) l
)
SELECT id FROM t

-- name: save_tasks
-- The mutable columns of tasks, one JSON object per task (one parameter, not one array
-- per column: a fraction of the client's encoding work), and the events to append, in
-- order, in the same statement. Each event row joins the events lock (shared, held to
-- commit; see "The events lock" below), so the lock is held before any event id is taken.
WITH s AS (
    UPDATE tasks AS t SET status = v.status, attempts = v.attempts,
        lease_owner = v.lease_owner, lease_token = v.lease_token,
        lease_expires_at = v.lease_expires_at, run_after = v.run_after, result = v.result,
        error = v.error, usage_input_tokens = v.uin, usage_output_tokens = v.uout,
        usage_cached_input_tokens = v.ucached, usage_cost_usd = v.ucost,
        updated_at = v.updated_at, finished_at = v.finished_at, wake_each = v.wake_each
    FROM jsonb_to_recordset(%(tasks)s::jsonb) AS v(id bigint, status text, attempts int,
        lease_owner text, lease_token text, lease_expires_at timestamptz,
        run_after timestamptz, result text, error text, uin bigint, uout bigint,
        ucached bigint, ucost float8, updated_at timestamptz, finished_at timestamptz,
        wake_each boolean)
    WHERE t.id = v.id AND t.id = ANY(%(ids)s::bigint[])  -- the ids again: an index lookup
), e AS (
    INSERT INTO events (ts, type, task_id, data)
    SELECT u.ts, u.type, u.task_id, u.data
    FROM ROWS FROM (jsonb_to_recordset(%(events)s::jsonb)
        AS (ts timestamptz, type text, task_id bigint, data jsonb)) WITH ORDINALITY
        AS u(ts, type, task_id, data, n),
        LATERAL (SELECT u.n, pg_advisory_xact_lock_shared(7001, hashtext(current_schema()))) l
    ORDER BY u.n
)
SELECT 1

-- name: get_task
SELECT * FROM tasks WHERE id = %s

-- name: get_task_for_update
SELECT * FROM tasks WHERE id = %s FOR UPDATE

-- name: get_tasks
SELECT * FROM tasks WHERE id = ANY(%s::bigint[])

-- name: with_active_children
SELECT DISTINCT parent_id FROM tasks
WHERE parent_id = ANY(%s::bigint[])
    AND status IN ('queued', 'leased', 'running', 'waiting_children', 'waiting_approval')

-- name: tasks_for_update
SELECT * FROM tasks WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE

-- name: lock_tasks
-- tasks_for_update's locks without its rows (complete_done reads what it needs), taken
-- in the order of the ids (sorted by the caller), each row found through its id alone
-- (OFFSET 0: a lookup per id, never a scan of the table, however few its rows).
SELECT t.id FROM unnest(%s::bigint[]) AS i(id),
    LATERAL (SELECT id FROM tasks WHERE id = i.id OFFSET 0 FOR UPDATE) AS t

-- name: task_by_key
SELECT * FROM tasks WHERE idempotency_key = %s

-- name: lease_now
-- The lease in one statement, decided where the rows are locked: up to %(limit)s ready
-- tasks (the best first, skipping rows another lease holds) become leased to %(owner)s,
-- as lifecycle.lease says (a property test holds the two equal): one more attempt, the
-- token "{id}.{attempt}.{nonce}" (each a different one of %(nonces)s), the lease
-- expiry, updated_at; each gets its task.leased event under the events lock (see
-- below). No sort anywhere (see lease_gate): the ready rows are taken in index order.
-- It leases nothing, and returns the locked rows of kind 0, when lapsed leases are due:
-- those are reclaimed in Python first (lifecycle.reclaim),
-- then the lease is decided there too. A worker marked stopped (see is_stopped; its gate
-- is held before this statement's snapshot) locks nothing and gets one row of kind 2.
-- Leased tasks come back as kind 1, as stored. Each lapsed lease and ready task is found
-- through its own partial index (no OR in the lease predicate).
WITH stop AS (
    -- and the setting lease_gate saved restored, as this statement runs (it was planned
    -- without sorts): the rest of the transaction is planned as before
    SELECT EXISTS (SELECT 1 FROM state WHERE task_id = 0 AND key = %(stop_key)s) AS stopped,
        set_config('enable_sort', current_setting('loops.enable_sort'), true) AS sorts
), expired AS (
    SELECT * FROM tasks
    WHERE status IN ('leased', 'running') AND lease_expires_at <= %(now)s
        AND NOT (SELECT stopped FROM stop)
    ORDER BY lease_expires_at
    LIMIT %(reclaim)s
    FOR UPDATE SKIP LOCKED
), ready AS (
    SELECT id, priority FROM tasks
    WHERE status = 'queued' AND run_after <= updated_at AND run_after <= %(now)s
        AND (%(types)s::text[] IS NULL OR type = ANY(%(types)s::text[]))
        AND NOT (SELECT stopped FROM stop) AND NOT EXISTS (SELECT 1 FROM expired)
    ORDER BY priority, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), picked AS (
    -- one row, the ids in order: the update below finds its rows through tasks_pkey
    -- (id = ANY), whatever the plan; a join with ready rows was planned generically
    -- (psycopg prepares after five runs) as a hash join over a scan of the whole table
    SELECT ARRAY(SELECT id FROM ready) AS ids
), leased AS (
    UPDATE tasks AS t SET status = 'leased', attempts = t.attempts + 1,
        lease_owner = %(owner)s,
        lease_token = t.id || '.' || (t.attempts + 1) || '.'
            || (%(nonces)s::text[])[array_position(p.ids, t.id)],
        lease_expires_at = %(expires)s, updated_at = %(now)s
    FROM picked AS p
    WHERE t.id = ANY(p.ids)
    RETURNING t.*
), e AS (
    INSERT INTO events (ts, type, task_id, data)
    SELECT %(now)s, 'task.leased', l.id,
        jsonb_build_object('worker', %(owner)s::text, 'attempt', l.attempts)
    FROM leased AS l,
        LATERAL (SELECT l.id, pg_advisory_xact_lock_shared(7001, hashtext(current_schema()))) k
)
SELECT 0, * FROM expired
UNION ALL
SELECT 1, * FROM leased
UNION ALL
SELECT 2, (NULL::tasks).* FROM stop WHERE stopped

-- name: has_work
-- Whether a lease now would find anything (a read: no row is locked).
SELECT EXISTS (SELECT 1 FROM tasks WHERE status IN ('leased', 'running')
                   AND lease_expires_at <= %(now)s)
    OR EXISTS (SELECT 1 FROM tasks
               WHERE status = 'queued' AND run_after <= updated_at AND run_after <= %(now)s
                   AND (%(types)s::text[] IS NULL OR type = ANY(%(types)s::text[])))
    OR EXISTS (SELECT 1 FROM tasks
               WHERE status = 'queued' AND run_after > updated_at AND run_after <= %(now)s
                   AND (%(types)s::text[] IS NULL OR type = ANY(%(types)s::text[])))

-- name: ready_tasks
-- Due tasks only: lease_gate, earlier in the transaction, promoted the deferred ones.
SELECT * FROM tasks
WHERE status = 'queued' AND run_after <= updated_at AND run_after <= %s
    AND (%s::text[] IS NULL OR type = ANY(%s::text[]))
ORDER BY priority, id
LIMIT %s
FOR UPDATE SKIP LOCKED

-- name: expired_tasks
SELECT * FROM tasks
WHERE status IN ('leased', 'running') AND lease_expires_at <= %s
ORDER BY lease_expires_at
LIMIT %s
FOR UPDATE SKIP LOCKED

-- name: children
SELECT id, status FROM tasks WHERE parent_id = %s ORDER BY id

-- name: complete_done
-- Plain "done" completions decided where they are stored, as lifecycle.complete says (a
-- property test holds the two equal): each of %(done)s (id, token, result; in request
-- order) whose task holds that live lease (leased or running, the token its current one,
-- not lapsed at %(now)s), has no parent (no rollup to do) and no child (none active to
-- wait for) becomes done: result set, error cleared, lease expiry cleared, updated_at and
-- finished_at %(now)s, wake_each off; with its task.completed event under the events lock
-- (see below), in request order. The others are left as they are, for Python to decide.
-- Sent after tasks_for_update has locked them, as a statement of its own, so it sees
-- every child committed before the locks were granted (as children_of); nothing else
-- can change the locked rows, so what `ok` reads of them is what the UPDATE changes.
-- Every row is found through its id alone, and every child check through the parent's
-- id (OFFSET 0 keeps each a subquery of its own, planned per row): with the lease
-- conditions beside the id, a table never analysed was planned as a walk of
-- tasks_lease_expiry, whose entries for every task leased since the last vacuum are
-- still there (thousands in a drain), each row rechecked; or as a hash of every task.
WITH r AS (
    SELECT * FROM ROWS FROM (jsonb_to_recordset(%(done)s::jsonb)
        AS (id bigint, token text, result text)) WITH ORDINALITY AS r(id, token, result, n)
), ok AS (
    SELECT r.n, r.id, r.result
    FROM r, LATERAL (SELECT status, lease_token, lease_expires_at, parent_id,
                         EXISTS (SELECT 1 FROM tasks AS c WHERE c.parent_id = tasks.id
                                 OFFSET 0) AS has_child
                     FROM tasks WHERE id = r.id OFFSET 0) AS t
    WHERE t.lease_token = r.token AND t.status IN ('leased', 'running')
        AND (t.lease_expires_at IS NULL OR t.lease_expires_at > %(now)s)
        AND t.parent_id IS NULL AND NOT t.has_child
), done AS (
    UPDATE tasks AS t SET status = 'done', result = ok.result, error = NULL,
        lease_expires_at = NULL, updated_at = %(now)s, finished_at = %(now)s,
        wake_each = false
    FROM ok
    WHERE t.id = ok.id
    RETURNING ok.n, t.*
), e AS (
    INSERT INTO events (ts, type, task_id, data)
    SELECT %(now)s, 'task.completed', d.id, '{"status": "done"}'::jsonb
    FROM done AS d,
        LATERAL (SELECT d.id, pg_advisory_xact_lock_shared(7001, hashtext(current_schema()))) k
    ORDER BY d.n
)
SELECT * FROM done

-- name: children_of
SELECT parent_id, id, status FROM tasks WHERE parent_id = ANY(%s::bigint[]) ORDER BY id

-- The events lock, pg_advisory_xact_lock_shared(7001, hashtext(current_schema())):
-- writers take it shared within the statement that takes event ids (create_task,
-- save_tasks, insert_event) and hold it until commit; writers never wait for each other
-- (their commits still group), only for a reader taking the horizon.

-- name: events_horizon_lock
-- A reader holds it exclusively for an instant: every writer that took an event id
-- before has committed or rolled back, so ids up to the horizon are final.
SELECT pg_advisory_xact_lock(7001, hashtext(current_schema()))

-- name: events_horizon
SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_id_seq

-- name: responsibilities_lock
-- Serialises syncing and dispatching responsibilities across gateways.
SELECT pg_advisory_xact_lock(7002, hashtext(current_schema()))

-- name: migrate_lock
SELECT pg_advisory_xact_lock(7003, 0)

-- name: insert_event
-- Under the events lock (shared, held to commit), taken before the event's id.
INSERT INTO events (ts, type, task_id, data)
SELECT %s::timestamptz, %s::text, %s::bigint, %s::jsonb
FROM (SELECT pg_advisory_xact_lock_shared(7001, hashtext(current_schema()))) l
RETURNING id

-- name: any_event_after
SELECT EXISTS (SELECT 1 FROM events WHERE id > %s)

-- name: events_after
SELECT id, ts, type, task_id, data FROM events WHERE id > %s AND id <= %s
ORDER BY id LIMIT %s

-- name: events_after_for_task
SELECT id, ts, type, task_id, data FROM events WHERE task_id = %s AND id > %s AND id <= %s
ORDER BY id LIMIT %s

-- name: events_latest
SELECT * FROM (SELECT id, ts, type, task_id, data FROM events WHERE id <= %s
    ORDER BY id DESC LIMIT %s) e
ORDER BY id

-- name: delete_oldest_events
WITH deleted AS (
    DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT %s) AND ts < %s
    RETURNING 1
)
SELECT count(*) FROM deleted

-- name: events_latest_for_task
SELECT * FROM (SELECT id, ts, type, task_id, data FROM events WHERE task_id = %s
    AND id <= %s ORDER BY id DESC LIMIT %s) e
ORDER BY id

-- name: upsert_step
INSERT INTO task_steps (task_id, name, status, idempotency_key, note, created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (task_id, idempotency_key) DO UPDATE SET
    name = excluded.name, status = excluded.status, note = excluded.note,
    updated_at = excluded.updated_at
RETURNING task_id, name, status, idempotency_key, note, created_at, updated_at

-- name: steps
SELECT task_id, name, status, idempotency_key, note, created_at, updated_at
FROM task_steps WHERE task_id = %s ORDER BY id

-- name: count_related
SELECT (SELECT count(*) FROM task_steps WHERE task_id = %(id)s),
       (SELECT count(*) FROM tasks WHERE parent_id = %(id)s),
       (SELECT count(*) FROM artifacts WHERE task_id = %(id)s)

-- name: get_state
SELECT value FROM state WHERE task_id = %s AND key = %s

-- name: put_state
INSERT INTO state (task_id, key, value, updated_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (task_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at

-- name: insert_artifact
INSERT INTO artifacts (task_id, name, kind, size, sha256, path, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
RETURNING id

-- name: artifacts
SELECT * FROM artifacts ORDER BY id DESC LIMIT %s

-- name: artifacts_for_task
SELECT * FROM artifacts WHERE task_id = %s ORDER BY id DESC LIMIT %s

-- name: get_artifact
SELECT * FROM artifacts WHERE id = %s

-- name: put_content
INSERT INTO artifact_contents (sha256, content) VALUES (%s, %s) ON CONFLICT (sha256) DO NOTHING

-- name: get_content
SELECT content FROM artifact_contents WHERE sha256 = %s

-- name: responsibilities
SELECT name, schedule, template, enabled, last_dispatched_at, next_due_at, last_task_id
FROM responsibilities ORDER BY name

-- name: save_responsibility
INSERT INTO responsibilities (name, schedule, template, enabled, last_dispatched_at,
    next_due_at, last_task_id)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (name) DO UPDATE SET schedule = excluded.schedule,
    template = excluded.template, enabled = excluded.enabled,
    last_dispatched_at = excluded.last_dispatched_at, next_due_at = excluded.next_due_at,
    last_task_id = excluded.last_task_id

-- name: counts_by_status
SELECT status, count(*) FROM tasks GROUP BY status

-- name: held_tasks
SELECT * FROM tasks WHERE status IN ('leased', 'running') ORDER BY lease_expires_at LIMIT %s

-- name: recent_failures
SELECT * FROM tasks WHERE status IN ('failed', 'blocked') ORDER BY finished_at DESC LIMIT %s

-- name: worker_gate
-- Taken exclusively by a worker's stop before it reads that worker's leases, and shared
-- by every lease for that worker until commit: a stop waits for leases in flight and
-- sees them; a lease after the stop sees the stop's mark.
SELECT pg_advisory_xact_lock(7004, hashtext(current_schema() || '/' || %s))

-- name: worker_gate_shared
SELECT pg_advisory_xact_lock_shared(7004, hashtext(current_schema() || '/' || %s))

-- name: lease_gate
-- worker_gate_shared, sent just before lease_now, with sorts disabled for it
-- (lease_now restores the setting as it runs, after it is planned): then the only plan of
-- lease_now without a sort is the walk of tasks_ready (and tasks_lease_expiry)
-- in order, stopping at the limit, and no plan of it needs a sort. Left to costs, a
-- table whose statistics predate its rows (a fresh queue filled faster than autovacuum
-- analyses it; or analysed while nothing was queued) is planned as a bitmap scan of
-- every queued row and a sort of them all, at every lease.
-- With %s 'off' (lease_next: a transaction that only leases), the commit does not wait
-- for the disk: a lease lost to a crash of the server leaves its task queued, leased
-- again later under another token (README, "Durability"). With NULL (every other
-- transaction) the commit stays synced as the server says.
-- First (promote, %s: now) the deferred tasks that came due move into tasks_ready
-- (migration 0004): updated_at becomes their run_after. Rows another transaction holds
-- are skipped, never waited for (that one promotes them, or the next lease does).
WITH promote AS (
    UPDATE tasks SET updated_at = run_after
    WHERE id IN (SELECT id FROM tasks
                 WHERE status = 'queued' AND run_after > updated_at AND run_after <= %s
                 FOR UPDATE SKIP LOCKED)
)
SELECT pg_advisory_xact_lock_shared(7004, hashtext(current_schema() || '/' || %s)),
    set_config('loops.enable_sort', current_setting('enable_sort'), true),
    set_config('enable_sort', 'off', true),
    set_config('synchronous_commit',
        coalesce(%s::text, current_setting('synchronous_commit')), true)

-- name: lease_gate_children
-- lease_gate and children_of in one statement, for a transaction that completes tasks
-- and then leases (complete_and_lease): sent right after tasks_for_update, it is a
-- statement of its own after those locks, so its snapshot sees every child committed
-- before they were granted (children_of's reason to follow the locks). The gate's row
-- always comes back (the LEFT JOIN: one row of NULLs when no task has children), so the
-- gate is taken and sorts turned off for the lease_now that follows either way. %s, %s,
-- %s: as lease_gate's (with its promotion); then the ids of the tasks to complete.
WITH promote AS (
    UPDATE tasks SET updated_at = run_after
    WHERE id IN (SELECT id FROM tasks
                 WHERE status = 'queued' AND run_after > updated_at AND run_after <= %s
                 FOR UPDATE SKIP LOCKED)
)
SELECT c.parent_id, c.id, c.status
FROM (
    SELECT pg_advisory_xact_lock_shared(7004, hashtext(current_schema() || '/' || %s)),
        set_config('loops.enable_sort', current_setting('enable_sort'), true),
        set_config('enable_sort', 'off', true),
        set_config('synchronous_commit',
            coalesce(%s::text, current_setting('synchronous_commit')), true)
) AS g
LEFT JOIN LATERAL (SELECT parent_id, id, status FROM tasks WHERE parent_id = ANY(%s::bigint[])) c
    ON true
ORDER BY c.id

-- name: held_by
SELECT * FROM tasks WHERE status IN ('leased', 'running') AND lease_owner = %s FOR UPDATE

-- name: is_stopped
SELECT EXISTS (SELECT 1 FROM state WHERE task_id = 0 AND key = %s)

-- name: mark_stopped
INSERT INTO state (task_id, key, value, updated_at) VALUES (0, %s, 'true', %s)
ON CONFLICT (task_id, key) DO UPDATE SET updated_at = excluded.updated_at

-- name: clear_stopped
DELETE FROM state WHERE task_id = 0 AND key = %s

-- name: forget_stopped
DELETE FROM state WHERE task_id = 0 AND key >= 'worker.stopped:' AND key < 'worker.stopped;'
    AND updated_at < %s
