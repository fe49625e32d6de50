-- A queued task whose run_after had not come when it was written (a retry in backoff, a
-- task created for later) is deferred: it leaves tasks_ready for tasks_deferred, keyed by
-- run_after. tasks_ready then holds only tasks that are due, so a lease takes the first
-- entries in (priority, id) order instead of walking past every deferred task ahead of
-- them (linear: ~5 ms a lease at 100,000 deferred tasks, bench/deferred_scan.py), and
-- "is anything due?" is one seek into either index.
--
-- Which index holds a task follows from its own columns, so no write path computes it:
-- a task is deferred while run_after > updated_at (a write sets updated_at to its now).
-- A deferred task that comes due is promoted by the next lease (its probe, lease_work,
-- sees it due): its updated_at is set to its run_after, the moment it became ready
-- (promote_due, one statement for every task due by then).
--
-- An earlier version's process names tasks_ready in its lease statements with the old
-- condition and is refused ("no query solution") once this has run: stop every process
-- of an earlier version before `loop db:migrate` (on one machine: restart them).
--
-- Both indexes carry updated_at and status as well, so that the tests of their own
-- conditions are read from the entry (a probe, a typed walk or a count reads no row).
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (priority, id, run_after, type, updated_at, status)
    WHERE status = 'queued' AND run_after <= updated_at;
CREATE INDEX tasks_deferred ON tasks (run_after, updated_at, status)
    WHERE status = 'queued' AND run_after > updated_at;
