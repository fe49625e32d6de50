-- A queued task whose run_after had not come when it was written (a retry in backoff, a
-- task created for later) is deferred: it leaves tasks_ready for tasks_deferred, keyed by
-- run_after. tasks_ready then holds only tasks that are due, so a lease takes the first
-- entries in (priority, id) order instead of walking past every deferred task ahead of
-- them, and "is anything due?" is one probe of either index.
--
-- Which index holds a task follows from its own columns, so no write path computes it:
-- a task is deferred while run_after > updated_at (a write sets updated_at to its now).
-- Every lease first promotes the deferred tasks that came due (lease_gate): their
-- updated_at becomes their run_after, the moment they became ready.
--
-- A lease of an earlier version does not name the new condition: it still leases
-- correctly (it reads the table, not the index), but may walk or sort, and promotes
-- nothing; upgrade every process after migrating. Building the two indexes holds the
-- table for the time they take (seconds at a million tasks).
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (priority, id) INCLUDE (run_after, type)
    WHERE status = 'queued' AND run_after <= updated_at;
CREATE INDEX tasks_deferred ON tasks (run_after)
    WHERE status = 'queued' AND run_after > updated_at;
