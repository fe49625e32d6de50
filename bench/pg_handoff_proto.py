"""Would a create that leases for an announced idle waiter pay? (branch `pghandoff`)

A measuring prototype, not the product: raw psycopg against a fresh database with the
loops schema and a scratch ``waiters`` table. Each sample, after 100 ms idle:

- today: A's ``create_task`` statement, then B's lease (``PostgresStore.lease_next``,
  the ``lease_now`` statement, one round trip) of that task;
- hand-off: one statement on A that claims a matching ``waiters`` row (SKIP LOCKED),
  inserts the task already leased to the waiter's owner (token ``{id}.1.{nonce}``, the
  id taken by ``nextval`` beforehand), writes task.created and task.leased and NOTIFYs
  the id and token (``--row``: the row as JSON) on ``loops_handoff``.

``--live`` adds the liveness test a waiter row needs (its pid in pg_stat_activity).

    BENCH_PG_DB_PREFIX=pghandoff_ .venv/bin/python bench/pg_handoff_proto.py [--live --row]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta

import psycopg

from loops.queue.tasks import TaskSpec, new_task
from loops.store.postgres import PostgresStore
from loops.store.postgres_unit import Q, insert_row
from loops.store.shared import created_event

HANDOFF = """
WITH w AS (
    DELETE FROM waiters WHERE id = (
        SELECT id FROM waiters WHERE (types IS NULL OR %(type)s = ANY(types)) {live}
        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING owner
), t AS (
    INSERT INTO tasks (id, type, title, prompt, success, "check", provider, model, cwd,
        max_iterations, min_tests, priority, status, attempts, max_attempts, lease_owner,
        lease_token, lease_expires_at, run_after, parent_id, depth, idempotency_key,
        responsibility, result, error, usage_input_tokens, usage_output_tokens,
        usage_cached_input_tokens, usage_cost_usd, created_at, updated_at, finished_at)
    SELECT %(nid)s, %(type)s, %(title)s, %(prompt)s, NULL, NULL, NULL, NULL, NULL, 10, 0, 3,
        CASE WHEN w.owner IS NULL THEN 'queued' ELSE 'leased' END,
        CASE WHEN w.owner IS NULL THEN 0 ELSE 1 END, 3, w.owner,
        CASE WHEN w.owner IS NULL THEN NULL ELSE %(nid)s || '.1.' || %(nonce)s END,
        CASE WHEN w.owner IS NULL THEN NULL ELSE %(expires)s::timestamptz END,
        %(now)s, NULL, 0, NULL, NULL, NULL, NULL, 0, 0, 0, 0, %(now)s, %(now)s, NULL
    FROM (SELECT 1) AS one LEFT JOIN w ON true
    RETURNING *
), e AS (
    INSERT INTO events (ts, type, task_id, data)
    SELECT t.created_at, 'task.created', t.id, %(data)s::jsonb FROM t,
        LATERAL (SELECT pg_advisory_xact_lock_shared(7001, hashtext(current_schema()))) l
    UNION ALL
    SELECT t.created_at, 'task.leased', t.id,
        jsonb_build_object('worker', t.lease_owner, 'attempt', 1)
    FROM t WHERE t.lease_owner IS NOT NULL
), n AS (
    SELECT pg_notify('loops_handoff', {payload}) FROM t WHERE t.lease_owner IS NOT NULL
)
SELECT t.id, (SELECT count(*) FROM n) FROM t
"""
LIVE = "AND EXISTS (SELECT 1 FROM pg_stat_activity s WHERE s.pid = waiters.pid)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--live", action="store_true")
    parser.add_argument("--row", action="store_true")
    args = parser.parse_args()
    db = os.environ.get("BENCH_PG_DB_PREFIX", "bench_") + "handoff_proto"
    url = f"postgresql://postgres@127.0.0.1:5432/{db}"
    pg = ["-h", "127.0.0.1", "-U", "postgres"]
    subprocess.run(["dropdb", *pg, "--if-exists", db], check=True)
    subprocess.run(["createdb", *pg, db], check=True)
    store = PostgresStore(url)
    store.migrate()
    a = psycopg.connect(url, autocommit=True)
    b = psycopg.connect(url, autocommit=True)
    a.execute(
        "CREATE TABLE waiters (id bigserial PRIMARY KEY, owner text NOT NULL,"
        " pid int NOT NULL, types text[])"
    )
    sql = HANDOFF.format(
        live=LIVE if args.live else "",
        payload="row_to_json(t)::text" if args.row else "t.id || ' ' || t.lease_token",
    )
    create_ms: list[float] = []
    lease_ms: list[float] = []
    hand_ms: list[float] = []
    for _ in range(args.samples):
        now = datetime.now(UTC)
        task = new_task(TaskSpec(type="noop", title="t", prompt="p"), now=now, max_attempts=3)
        data = json.dumps(created_event(task).data)
        time.sleep(0.1)
        t0 = time.perf_counter()
        a.execute(Q["create_task"], (*insert_row(task), data)).fetchone()
        create_ms.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        got = store.lease_next(now=datetime.now(UTC), owner="w1", ttl_ms=30_000)
        lease_ms.append((time.perf_counter() - t0) * 1e3)
        assert len(got) == 1
        b.execute(
            "INSERT INTO waiters (owner, pid, types) VALUES ('w1', pg_backend_pid(), '{noop}')"
        )
        row = a.execute("SELECT nextval(pg_get_serial_sequence('tasks', 'id'))").fetchone()
        assert row is not None
        time.sleep(0.1)
        now = datetime.now(UTC)
        params = {
            "nid": row[0], "type": "noop", "title": "t", "prompt": "p", "now": now,
            "expires": now + timedelta(seconds=30), "nonce": secrets.token_hex(4), "data": data,
        }  # fmt: skip
        t0 = time.perf_counter()
        out = a.execute(sql, params).fetchone()
        hand_ms.append((time.perf_counter() - t0) * 1e3)
        assert out is not None and out[1] == 1, out
    store.close()

    def show(name: str, xs: list[float]) -> str:
        p90 = sorted(xs)[int(len(xs) * 0.9)]
        return f"{name} median {statistics.median(xs):.3f} p90 {p90:.3f} ms"

    print(f"live={args.live} row={args.row}")
    print(show("create alone        ", create_ms))
    print(show("lease on B          ", lease_ms))
    print(show("create with hand-off", hand_ms))
    saved = statistics.median(create_ms) + statistics.median(lease_ms)
    print(f"saved per pickup ~ {saved - statistics.median(hand_ms):.3f} ms")


if __name__ == "__main__":
    main()
