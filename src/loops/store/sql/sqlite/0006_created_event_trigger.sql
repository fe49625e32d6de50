-- A task's `task.created` event is written by a trigger, inside the statement that
-- inserts the task (so in its transaction): a create without an idempotency key is one
-- autocommit INSERT instead of BEGIN IMMEDIATE, two INSERTs and COMMIT (a sixth less
-- CPU per create, each statement also costing the Python around it).
--
-- Only rows inserted with `created_event = 1` fire it: a process of an earlier version
-- inserts without the column (NULL) and writes the event itself, so during a rolling
-- upgrade every task still gets exactly one `task.created` event. ADD COLUMN changes no
-- row and leaves `SELECT *`'s earlier columns where they were.
--
-- The data is `loops.store.shared.created_event`'s, in the text PostgreSQL's jsonb
-- prints and `json.dumps(..., ensure_ascii=False)` writes (json_quote escapes as it
-- does); its id is drawn in the same transaction as every other event's, so ids stay
-- in commit order for readers of `after=ID`.

ALTER TABLE tasks ADD COLUMN created_event INTEGER;

CREATE TRIGGER tasks_created_event AFTER INSERT ON tasks WHEN NEW.created_event = 1
BEGIN
    INSERT INTO events (ts, type, task_id, data) VALUES (
        NEW.created_at, 'task.created', NEW.id,
        '{"type": ' || json_quote(NEW.type) || ', "priority": ' || NEW.priority
        || CASE WHEN NEW.parent_id IS NULL THEN '' ELSE ', "parent_id": ' || NEW.parent_id END
        || CASE WHEN NEW.responsibility IS NULL THEN ''
                ELSE ', "responsibility": ' || json_quote(NEW.responsibility) END
        || '}');
END;
