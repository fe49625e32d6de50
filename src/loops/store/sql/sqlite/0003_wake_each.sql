-- A task that completed `waiting_children` is woken as each of its children finishes
-- (whatever the child's status), not once all have: wake_each records that mode.
-- Added last, so `SELECT *` rows keep every earlier column where it was.

ALTER TABLE tasks ADD COLUMN wake_each INTEGER NOT NULL DEFAULT 0;
