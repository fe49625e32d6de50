-- tasks_status_id no longer holds queued tasks: tasks_ready already indexes every
-- queued task (by priority, then id), so a new task wrote two index entries for the
-- same fact, each dirtying its own page in the commit's WAL frames (a create wrote 5
-- frames; now 4, and a lease moves a task into this index instead of across it).
-- Listing queued tasks newest first merges tasks_ready's five priority ranges (each
-- in id order); listing another status names `status <> 'queued'` so that this
-- partial index serves it.
DROP INDEX tasks_status_id;
CREATE INDEX tasks_status_id ON tasks (status, id) WHERE status <> 'queued';
