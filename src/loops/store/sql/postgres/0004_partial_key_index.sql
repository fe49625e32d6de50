-- Idempotency keys are unique among the tasks that have one. The column's UNIQUE
-- constraint indexed every row, so each non-HOT update of a keyless task (every status
-- change) wrote a NULL entry; the partial index holds only the keys. `ON CONFLICT
-- (idempotency_key) WHERE idempotency_key IS NOT NULL` infers it (queries.sql).
-- Built in the migration's transaction: the table is locked against writes meanwhile.
-- An older version's create names no predicate, which this index cannot answer: its
-- every create fails once this is applied, so stop old processes before migrating.

ALTER TABLE tasks DROP CONSTRAINT tasks_idempotency_key_key;
CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
